// Style Dictionary (DTCG tokens) for one platform: node build.mjs web|mobile|desktop
import StyleDictionary from 'style-dictionary';

const platform = process.argv[2];
const platforms = {
  web: {
    transformGroup: 'css',
    buildPath: 'dist/web/',
    files: [{ destination: 'tokens.css', format: 'css/variables' }],
  },
  'web-js': {
    transformGroup: 'js',
    buildPath: 'dist/web/',
    files: [{ destination: 'tokens.js', format: 'javascript/es6' }],
  },
  mobile: {
    transformGroup: 'js',
    buildPath: 'dist/mobile/',
    files: [{ destination: 'tokens.json', format: 'json/flat' }],
  },
  desktop: {
    transformGroup: 'js',
    buildPath: 'dist/desktop/',
    files: [{ destination: 'tokens.json', format: 'json/nested' }],
  },
};
if (!platforms[platform] || platform === 'web-js') {
  console.error(`unknown platform ${platform}: one of web, mobile, desktop`);
  process.exit(2);
}
// `web` is two Style Dictionary platforms: CSS variables and an ES module.
const wanted = platform === 'web' ? ['web', 'web-js'] : [platform];
const sd = new StyleDictionary({
  source: ['tokens/*.json'],
  log: { verbosity: 'silent' },
  platforms: Object.fromEntries(wanted.map((p) => [p, platforms[p]])),
});
for (const p of wanted) {
  await sd.buildPlatform(p);
}
