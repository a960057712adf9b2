// The web app's entry point: renders the landing page with the brand button and cards.
import { Button } from "./components/button.js";
import { Card } from "./components/card.js";

export function App(root) {
  const page = document.createElement("main");
  page.className = "page";
  page.append(Card({ title: "Design tokens", body: "One source, every platform." }));
  page.append(Button({ label: "Get started", onClick: () => console.log("started") }));
  root.append(page);
  return page;
}
