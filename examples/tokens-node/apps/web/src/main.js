import { button } from './theme.js';

console.log(button());
