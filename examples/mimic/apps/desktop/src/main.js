// Tauri front end: applies the desktop tokens to the window chrome.
export function applyTheme(doc) {
  const root = doc.documentElement;
  for (const [name, value] of Object.entries(TOKENS)) {
    root.style.setProperty(`--${name}`, String(value));
  }
  return TOKENS["color-brand-primary"];
}
