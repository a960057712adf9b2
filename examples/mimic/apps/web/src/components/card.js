// A card with a title and body text.
export function Card({ title, body }) {
  const card = document.createElement("section");
  card.className = "card";
  card.innerHTML = `<h2>${title}</h2><p>${body}</p>`;
  return card;
}
