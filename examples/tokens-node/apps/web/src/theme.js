import { ColorBrand, ColorSurface, SpaceMedium } from '../../../packages/design-tokens/dist/web/tokens.js';

export const button = () => `background:${ColorBrand};color:${ColorSurface};padding:${SpaceMedium}`;
