// A primary button; colours come from the design tokens.
export function Button({ label, onClick }) {
  const button = document.createElement("button");
  button.className = "button button--primary";
  button.style.background = colorBrandPrimary;
  button.textContent = label;
  button.addEventListener("click", onClick);
  return button;
}
