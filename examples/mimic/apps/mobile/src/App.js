// React Native entry: the home screen themed from the mobile tokens.
import { HomeScreen } from "./screens/HomeScreen.js";

export default function App() {
  return HomeScreen({ theme: TOKENS });
}
