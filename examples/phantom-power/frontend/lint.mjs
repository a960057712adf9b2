// The frontend lint (a stand-in for ESLint, whose plugin tree would triple node_modules):
// no `any`, no `console.log`, no `var`. Prints file:line: problem; exits 1 on any.
import { readFileSync } from "node:fs";

const rules = [
  [/:\s*any\b/, "the `any` type"],
  [/console\.log\(/, "console.log left in"],
  [/\bvar\s/, "`var` (use let or const)"],
];
let problems = 0;
for (const file of process.argv.slice(2)) {
  readFileSync(file, "utf8").split("\n").forEach((line, i) => {
    for (const [re, what] of rules) {
      if (re.test(line)) {
        console.error(`${file}:${i + 1}: ${what}`);
        problems++;
      }
    }
  });
}
process.exit(problems ? 1 : 0);
