/** src/data: corpora, Fashion-MNIST (IDX), tokenizers, token streams and the resumable LM batcher. */
import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import {
  BpeTokenizer,
  ByteTokenizer,
  CharTokenizer,
  ConfigError,
  DataFormatError,
  DataUnavailableError,
  LMBatcher,
  RangeValueError,
  SwitchyardError,
  TokenStream,
  buildTokenizer,
  decodeText,
  detectEncoding,
  encodeCorpus,
  evalBatches,
  loadCorpus,
  loadFashionMnist,
  parseFortunes,
  parseIdx,
  tokenizerFromJSON,
  type Corpus,
  type Tokenizer,
} from '../src/index.js';

const tmpRoot = mkdtempSync(join(tmpdir(), 'switchyard-data-'));
afterAll(() => rmSync(tmpRoot, { recursive: true, force: true }));
let tmpCount = 0;
function tmpDir(): string {
  const d = join(tmpRoot, `d${tmpCount++}`);
  mkdirSync(d, { recursive: true });
  return d;
}

/** The error a function throws (fails the test when it does not throw). */
function thrown(f: () => unknown): Error {
  try {
    f();
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected an error, none was thrown');
}

const MIXED = 'Call me Ishmael. Привет, мир! 😀🐋 naïve café — 鯨 \n\ttabs';

/** Bytes of `text` in a legacy single-byte encoding, built by inverting TextDecoder. */
function encodeLegacy(text: string, label: string): Uint8Array {
  const dec = new TextDecoder(label);
  const map = new Map<string, number>();
  for (let b = 0; b < 256; b++) map.set(dec.decode(Uint8Array.of(b)), b);
  return Uint8Array.from([...text].map((ch) => {
    const b = map.get(ch);
    if (b === undefined) throw new Error(`${ch} not in ${label}`);
    return b;
  }));
}

// -------------------------------------------------------------------------------------------
describe('tokenizers', () => {
  function roundTripJSON(t: Tokenizer): Tokenizer {
    return tokenizerFromJSON(JSON.parse(JSON.stringify(t.toJSON())));
  }

  it('char: sorted code points, unknown id 0, exact round trip of seen text', () => {
    const t = CharTokenizer.fromText(MIXED);
    const cps = [...new Set([...MIXED].map((c) => c.codePointAt(0) ?? 0))].sort((a, b) => a - b);
    expect(t.codePoints).toEqual(cps);
    expect(t.vocabSize).toBe(cps.length + 1);
    const ids = t.encode(MIXED);
    expect(ids.length).toBe([...MIXED].length); // one id per code point (emoji are one id, not two)
    expect(Math.min(...ids)).toBeGreaterThanOrEqual(1);
    expect(t.decode(ids)).toBe(MIXED);
    expect(t.encode('Z')).toEqual([0]); // unseen
    expect(t.decode([0])).toBe('\uFFFD');
    expect(t.tokenString(0)).toBe('<unk>');
    expect(t.tokenString(t.encode('\n')[0])).toBe('\\n');
    expect(t.tokenString(t.encode('🐋')[0])).toBe('🐋');
    expect(thrown(() => t.decode([t.vocabSize]))).toBeInstanceOf(RangeValueError);
  });

  it('char: maxVocab keeps the most frequent characters', () => {
    const t = CharTokenizer.fromText(['aaaa bbb cc d', 'aa'], { maxVocab: 4 });
    expect(t.vocabSize).toBe(4);
    expect(t.decode(t.encode('abcd'))).toBe('ab\uFFFD\uFFFD'); // kept: a, space, b
    expect(thrown(() => CharTokenizer.fromText('x', { maxVocab: 1 }))).toBeInstanceOf(SwitchyardError);
  });

  it('byte: UTF-8 bytes, 256 ids, emoji and Cyrillic round trip', () => {
    const t = new ByteTokenizer();
    expect(t.vocabSize).toBe(256);
    expect(t.unknownId).toBeNull();
    const ids = t.encode(MIXED);
    expect(ids).toEqual(Array.from(new TextEncoder().encode(MIXED)));
    expect(t.decode(ids)).toBe(MIXED);
    expect(t.encode('😀')).toEqual([0xf0, 0x9f, 0x98, 0x80]);
    expect(t.encode('П')).toEqual([0xd0, 0x9f]);
    expect(t.tokenString(65)).toBe('A');
    expect(t.tokenString(10)).toBe('\\n');
    expect(t.tokenString(0xd0)).toBe('<0xD0>');
    expect(t.decode([0xd0])).toBe('\uFFFD'); // a lone lead byte
    expect(thrown(() => t.decode([256]))).toBeInstanceOf(RangeValueError);
  });

  it('bpe (r50k_base = gpt2): round trip, special tokens as plain text, pure decode', () => {
    const t = BpeTokenizer.create();
    expect(t.encoding).toBe('r50k_base');
    expect(BpeTokenizer.create('gpt2').encoding).toBe('r50k_base');
    expect(t.vocabSize).toBe(50256);
    const text = MIXED + ' <|endoftext|>';
    const ids = t.encode(text);
    expect(ids.slice(0, 5)).toEqual([14134, 502, 1148, 21720, 417]); // "Call", " me", " Is", "hma", "el"
    expect(ids.length).toBeLessThan(text.length);
    expect(t.decode(ids)).toBe(text);
    // A token holding half of a Cyrillic letter: shown as bytes; decoding it does not leak into the next call.
    const pe = t.encode(' П');
    expect(pe.length).toBe(2);
    expect(t.tokenString(pe[0])).toBe(' <0xD0>');
    expect(t.decode([pe[0]])).toBe(' \uFFFD');
    expect(t.decode([pe[1]])).toBe('\uFFFD');
    expect(t.decode(pe)).toBe(' П');
    expect(t.tokenString(t.encode('Call')[0])).toBe('Call');
  });

  it('bpe remap: dense ids for the tokens seen in the corpus, unknown id 0, serialisable', () => {
    const corpus = ['the whale, the whale!', 'Call me Ishmael.'];
    const full = BpeTokenizer.create();
    const t = full.remap(corpus);
    const seen = new Set(corpus.flatMap((s) => full.encode(s)));
    expect(t.vocabSize).toBe(seen.size + 1);
    expect(t.keptIds).toEqual([...seen].sort((a, b) => a - b));
    expect(t.name).toBe(`bpe-r50k_base/remapped-${seen.size + 1}`);
    for (const s of corpus) {
      const ids = t.encode(s);
      expect(Math.max(...ids)).toBeLessThan(t.vocabSize);
      expect(Math.min(...ids)).toBeGreaterThanOrEqual(1);
      expect(t.decode(ids)).toBe(s);
      expect(ids.map((i) => t.originalId(i))).toEqual(full.encode(s));
    }
    const unseen = full.encode(' zebra'); // " z", "ebra": neither in the corpus
    expect(t.encode(' zebra')).toEqual(unseen.map(() => 0));
    expect(t.decode(t.encode('the zebra'))).toBe('the' + '\uFFFD'.repeat(unseen.length));
    expect(t.tokenString(0)).toBe('<unk>');

    // keepBytes: unseen tokens are spelled in bytes, so any text survives.
    const tb = full.remap(corpus, { keepBytes: true });
    expect(tb.vocabSize).toBeGreaterThan(256);
    expect(tb.vocabSize).toBeLessThanOrEqual(seen.size + 256 + 1);
    expect(tb.decode(tb.encode('the zebra 🐋 Привет'))).toBe('the zebra 🐋 Привет');
    expect(tb.encode('the zebra').length).toBeGreaterThan(full.encode('the zebra').length);

    // maxVocab keeps the most frequent (" whale" appears twice).
    const tm = full.remap(corpus, { maxVocab: 3 });
    expect(tm.vocabSize).toBe(3);
    expect(tm.keptIds).toContain(full.encode(' whale')[0]);

    // JSON round trip keeps the kept-id list.
    const back = roundTripJSON(t) as BpeTokenizer;
    expect(back).toBeInstanceOf(BpeTokenizer);
    expect(back.keptIds).toEqual(t.keptIds);
    expect(back.encode(corpus.join(' '))).toEqual(t.encode(corpus.join(' ')));
  });

  it('buildTokenizer fits char and remapped bpe to texts; JSON round trips are identical', () => {
    const texts = ['Привет, мир! 😀', 'hello world'];
    for (const kind of ['char', 'byte', 'bpe'] as const) {
      const t = buildTokenizer(kind, texts);
      const back = roundTripJSON(t);
      expect(back.name).toBe(t.name);
      expect(back.vocabSize).toBe(t.vocabSize);
      for (const s of texts) {
        expect(back.encode(s)).toEqual(t.encode(s));
        expect(t.decode(t.encode(s))).toBe(s);
      }
    }
    expect(buildTokenizer('bpe', texts, { remap: false }).vocabSize).toBe(50256);
    expect(buildTokenizer('bpe', texts).vocabSize).toBeLessThan(40);
  });

  it('tokenizerFromJSON rejects bad specs with typed errors naming the field', () => {
    expect(thrown(() => tokenizerFromJSON(null))).toBeInstanceOf(ConfigError);
    const e = thrown(() => tokenizerFromJSON({ type: 'wordpiece' }));
    expect(e).toBeInstanceOf(ConfigError);
    expect(e.message).toContain('tokenizer.type');
    expect(thrown(() => tokenizerFromJSON({ type: 'bpe', encoding: 'nope' })).message).toContain('encoding');
    expect(thrown(() => tokenizerFromJSON({ type: 'bpe', encoding: 'r50k_base', keptIds: [5, 3] })).message).toContain('keptIds[1]');
    expect(thrown(() => tokenizerFromJSON({ type: 'char', codePoints: [65, 65] })).message).toContain('codePoints[1]');
  });
});

// -------------------------------------------------------------------------------------------
describe('corpora', () => {
  it('Moby-Dick ships with the install: > 1 M characters, in order', () => {
    const c = loadCorpus('moby-dick');
    expect(c.name).toBe('moby-dick');
    expect(c.ordered).toBe(true);
    expect(c.documents.length).toBe(139);
    const total = c.documents.reduce((a, d) => a + d.text.length, 0);
    expect(total).toBeGreaterThan(1_000_000);
    const ch1 = c.documents.find((d) => d.label === 'chapter-1');
    expect(ch1?.text.startsWith('CHAPTER 1. Loomings.\n\nCall me Ishmael.')).toBe(true);
    expect(c.documents[c.documents.length - 1].label).toBe('epilogue');
  });

  it('parseFortunes splits on % lines, normalises CRLF, drops blank records', () => {
    expect(parseFortunes('one\nline two\n%\ntwo\r\n%\r\n\n%\nthree\n\t\t-- someone\n%\n')).toEqual(['one\nline two', 'two', 'three\n\t\t-- someone']);
    expect(parseFortunes('a single fortune without separator\n')).toEqual(['a single fortune without separator']);
    expect(parseFortunes('')).toEqual([]);
  });

  it('detectEncoding: UTF-8, KOI8-R, windows-1251 and Latin-1 files decode correctly', () => {
    const ru = 'Не суй взнос не в свое дело. Истина лежит посередине.';
    const koi = encodeLegacy(ru, 'koi8-r');
    const cp1251 = encodeLegacy(ru, 'windows-1251');
    expect(detectEncoding(new TextEncoder().encode(ru))).toBe('utf-8');
    expect(detectEncoding(koi, 'ru')).toBe('koi8-r');
    expect(detectEncoding(cp1251, 'ru')).toBe('windows-1251');
    expect(detectEncoding(koi)).toBe('koi8-r'); // no hint: mostly Cyrillic letters
    expect(decodeText(koi, { language: 'ru' })).toBe(ru);
    expect(decodeText(cp1251, { language: 'ru' })).toBe(ru);
    const de = 'Aller Größe Keim, er heißt Entsagung. Übermut tut selten gut.';
    expect(detectEncoding(encodeLegacy(de, 'windows-1252'))).toBe('windows-1252');
    expect(decodeText(encodeLegacy(de, 'windows-1252'))).toBe(de);
    expect(decodeText(new TextEncoder().encode('\uFEFFbom'))).toBe('bom');
  });

  /** A miniature /usr/share/games/fortunes laid out like Debian's packages. */
  function fortunesFixture(opts: { languages?: string[]; englishFull?: boolean } = {}): string {
    const root = tmpDir();
    const langs = opts.languages ?? ['en', 'de', 'es', 'it', 'ru'];
    const w = (p: string, data: string | Uint8Array): void => {
      mkdirSync(join(root, p, '..'), { recursive: true });
      writeFileSync(join(root, p), data);
    };
    if (langs.includes('en')) {
      w('fortunes', 'min one\n%\nmin two\n%\n'); // from fortunes-min
      w('fortunes.dat', new Uint8Array([0, 0, 0, 2, 1, 2, 3]));
      if (opts.englishFull !== false) {
        w('computers', 'Bugs are features.\n%\nA computer is a state machine.\n\t\t-- someone\n%\n');
        w('food', 'Eat dessert first.\r\n%\r\nSpam.\r\n%\r\n');
        symlinkSync('computers', join(root, 'computers.u8'));
        w('computers.dat', new Uint8Array([1, 2, 3]));
      }
    }
    if (langs.includes('it')) {
      w('it/italia', 'Pizza e mandolino.\n%\nCiao, bella.\n%\n');
      w('it/italia.dat', new Uint8Array([9]));
      symlinkSync('italia', join(root, 'it/italia.u8'));
      symlinkSync('it/italia', join(root, 'italia')); // fortunes-it also links its files at the top level
    }
    if (langs.includes('de')) {
      w('de/zitate', 'Aller Größe Keim, er heißt Entsagung.\n\t\t-- Theodor Fontane\n%\nÜbung macht den Meister.\n%\n');
      w('de/witze', encodeLegacy('Witz mit Umlauten: äöü ß.\n%\nNoch einer.\n%\n', 'windows-1252'));
      symlinkSync('/nonexistent/witze.dat', join(root, 'de/witze.dat'));
    }
    if (langs.includes('es')) {
      w('es/amistad.fortunes', 'La amistad es un alma.\n%\n¿Qué es la vida?\n%\n');
      w('es/amistad.fortunes.dat', new Uint8Array([1]));
      w('es/off/racistas.fortunes', 'OFFENSIVE\n%\n');
    }
    if (langs.includes('ru')) {
      w('ru/koi', encodeLegacy('Не суй взнос не в свое дело\n%\nИстина лежит посередине.\n%\n', 'koi8-r'));
      w('ru/utf', 'Привет, мир!\r\n%\r\nВторой.\r\n%\r\n');
    }
    return root;
  }

  it('fortunes on a fixture: topics as labels, .dat/.u8/off/ and foreign symlinks skipped, encodings decoded', () => {
    const root = fortunesFixture();
    const en = loadCorpus('fortunes', { fortunesDir: root });
    expect(en.ordered).toBe(false);
    expect(en.documents).toEqual([
      { text: 'Bugs are features.', label: 'computers' },
      { text: 'A computer is a state machine.\n\t\t-- someone', label: 'computers' },
      { text: 'Eat dessert first.', label: 'food' },
      { text: 'Spam.', label: 'food' },
      { text: 'min one', label: 'fortunes' },
      { text: 'min two', label: 'fortunes' },
    ]);
    const de = loadCorpus('fortunes-de', { fortunesDir: root });
    expect(de.documents.map((d) => d.label)).toEqual(['witze', 'witze', 'zitate', 'zitate']);
    expect(de.documents[0].text).toBe('Witz mit Umlauten: äöü ß.');
    expect(de.documents[2].text).toBe('Aller Größe Keim, er heißt Entsagung.\n\t\t-- Theodor Fontane');
    const es = loadCorpus('fortunes-es', { fortunesDir: root });
    expect(es.documents).toEqual([
      { text: 'La amistad es un alma.', label: 'amistad' },
      { text: '¿Qué es la vida?', label: 'amistad' },
    ]);
    const it_ = loadCorpus('fortunes-it', { fortunesDir: root });
    expect(it_.documents.map((d) => d.text)).toEqual(['Pizza e mandolino.', 'Ciao, bella.']);
    const ru = loadCorpus('fortunes-ru', { fortunesDir: root });
    expect(ru.documents.map((d) => d.text)).toEqual(['Не суй взнос не в свое дело', 'Истина лежит посередине.', 'Привет, мир!', 'Второй.']);
    expect(ru.documents.map((d) => d.label)).toEqual(['koi', 'koi', 'utf', 'utf']);

    const multi = loadCorpus('fortunes-multilingual', { fortunesDir: root });
    const counts: Record<string, number> = {};
    for (const d of multi.documents) counts[d.label] = (counts[d.label] ?? 0) + 1;
    expect(counts).toEqual({ en: 6, de: 4, es: 2, it: 2, ru: 4 });
    const capped = loadCorpus('fortunes-multilingual', { fortunesDir: root, maxPerLabel: 2, seed: 3 });
    expect(capped.documents.length).toBe(10);
    expect(loadCorpus('fortunes-multilingual', { fortunesDir: root, maxPerLabel: 2, seed: 3 })).toEqual(capped);
  });

  it('a missing fortunes package is a DataUnavailableError naming the Debian package', () => {
    const root = fortunesFixture({ languages: ['en'] });
    const e = thrown(() => loadCorpus('fortunes-de', { fortunesDir: root }));
    expect(e).toBeInstanceOf(DataUnavailableError);
    expect(e).toBeInstanceOf(SwitchyardError);
    expect(e.message).toContain('install the Debian package fortunes-de (apt-get install fortunes-de)');
    expect((e as DataUnavailableError).debianPackages).toEqual(['fortunes-de']);
    expect((e as DataUnavailableError).field).toBe('corpus');

    const m = thrown(() => loadCorpus('fortunes-multilingual', { fortunesDir: root }));
    expect(m).toBeInstanceOf(DataUnavailableError);
    expect(m.message).toContain('apt-get install fortunes-de fortunes-es fortunes-it fortunes-ru');

    // Only fortunes-min (what fortune-mod pulls in) is not the English corpus.
    const minOnly = fortunesFixture({ languages: ['en'], englishFull: false });
    expect(thrown(() => loadCorpus('fortunes', { fortunesDir: minOnly })).message).toContain('apt-get install fortunes)');
    const none = join(tmpRoot, 'no-such-dir');
    const n = thrown(() => loadCorpus('fortunes', { fortunesDir: none }));
    expect(n.message).toContain('does not exist');
    expect(n.message).toContain('install the Debian package fortunes (apt-get install fortunes)');
  });

  it('paths: a .txt file, a directory of .txt files; a missing path or unknown name is a DataUnavailableError', () => {
    const dir = tmpDir();
    writeFileSync(join(dir, 'b.txt'), 'bee text');
    writeFileSync(join(dir, 'a.txt'), encodeLegacy('café', 'windows-1252'));
    writeFileSync(join(dir, 'skip.md'), 'not a txt');
    const d = loadCorpus(dir);
    expect(d.ordered).toBe(false);
    expect(d.documents).toEqual([{ text: 'café', label: 'a' }, { text: 'bee text', label: 'b' }]);
    const f = loadCorpus(join(dir, 'b.txt'));
    expect(f.ordered).toBe(true);
    expect(f.documents).toEqual([{ text: 'bee text', label: 'b' }]);

    const missing = join(dir, 'nope.txt');
    const e = thrown(() => loadCorpus(missing));
    expect(e).toBeInstanceOf(DataUnavailableError);
    expect(e.message).toContain(missing);
    expect(e.message).toContain('no such file or directory');
    const u = thrown(() => loadCorpus('fortune-de'));
    expect(u).toBeInstanceOf(DataUnavailableError);
    expect(u.message).toContain('moby-dick, fortunes, fortunes-de');
    const empty = tmpDir();
    expect(thrown(() => loadCorpus(empty)).message).toContain('no .txt files');
  });

  const allFortunes = ['computers', 'de', 'es', 'it', 'ru'].every((p) => existsSync(join('/usr/share/games/fortunes', p)));
  const fortunesTitle = allFortunes
    ? 'real Debian fortunes files (fortunes, fortunes-de, -es, -it, -ru)'
    : 'real Debian fortunes files — SKIPPED: not installed (apt-get install fortunes fortunes-de fortunes-es fortunes-it fortunes-ru)';
  it.skipIf(!allFortunes)(fortunesTitle, () => {
    const en = loadCorpus('fortunes');
    const topics = new Set(en.documents.map((d) => d.label));
    expect(en.documents.length).toBeGreaterThan(10_000);
    expect(topics.has('computers') && topics.has('science')).toBe(true);
    expect(topics.has('italia') || topics.has('adams')).toBe(false); // fortunes-it's top-level links are not English
    for (const name of ['fortunes-de', 'fortunes-es', 'fortunes-it', 'fortunes-ru'] as const) {
      const c = loadCorpus(name);
      expect(c.documents.length, name).toBeGreaterThan(1000);
      expect(c.documents.every((d) => d.text.length > 0 && !d.text.includes('\uFFFD') && !d.text.includes('\r')), name).toBe(true);
    }
    expect(loadCorpus('fortunes-es').documents.some((d) => d.label === 'racistas')).toBe(false); // off/ skipped
    const ru = loadCorpus('fortunes-ru').documents.map((d) => d.text).join('');
    const cyr = (ru.match(/[а-яё]/gi) ?? []).length;
    expect(cyr / ru.length).toBeGreaterThan(0.5);
    const multi = loadCorpus('fortunes-multilingual');
    expect(new Set(multi.documents.map((d) => d.label))).toEqual(new Set(['en', 'de', 'es', 'it', 'ru']));
  });
});

// -------------------------------------------------------------------------------------------
describe('Fashion-MNIST (IDX)', () => {
  function idx(typeCode: number, dims: number[], body: Uint8Array): Uint8Array {
    const out = new Uint8Array(4 + 4 * dims.length + body.length);
    const v = new DataView(out.buffer);
    v.setUint32(0, (typeCode << 8) | dims.length, false);
    dims.forEach((d, i) => v.setUint32(4 + 4 * i, d, false));
    out.set(body, 4 + 4 * dims.length);
    return out;
  }
  function writeSet(dir: string, prefix: string, n: number, opts: { gzip?: boolean; labels?: number[] } = {}): { pixels: Uint8Array; labels: Uint8Array } {
    const pixels = Uint8Array.from({ length: n * 28 * 28 }, (_, i) => (i * 7 + n) % 256);
    const labels = Uint8Array.from(opts.labels ?? Array.from({ length: n }, (_, i) => i % 10));
    const img = idx(0x08, [n, 28, 28], pixels);
    const lab = idx(0x08, [labels.length], labels);
    const gz = opts.gzip ?? true;
    writeFileSync(join(dir, `${prefix}-images-idx3-ubyte${gz ? '.gz' : ''}`), gz ? gzipSync(img) : img);
    writeFileSync(join(dir, `${prefix}-labels-idx1-ubyte${gz ? '.gz' : ''}`), gz ? gzipSync(lab) : lab);
    return { pixels, labels };
  }

  it('reads gzipped and plain IDX files, scales pixels to [0,1], honours limit', () => {
    const dir = tmpDir();
    const test = writeSet(dir, 't10k', 5);
    const train = writeSet(dir, 'train', 3, { gzip: false });
    const t = loadFashionMnist({ split: 'test', dir });
    expect(t.count).toBe(5);
    expect(t.images.length).toBe(5 * 28 * 28);
    expect(t.images[100]).toBeCloseTo(test.pixels[100] / 255, 7);
    expect(Array.from(t.labels)).toEqual(Array.from(test.labels));
    expect(t.classes[9]).toBe('Ankle boot');
    expect(Math.max(...t.images)).toBeLessThanOrEqual(1);
    const tr = loadFashionMnist({ split: 'train', dir, limit: 2 });
    expect(tr.count).toBe(2);
    expect(tr.images.length).toBe(2 * 784);
    expect(Array.from(tr.labels)).toEqual(Array.from(train.labels.subarray(0, 2)));
  });

  it('parseIdx decodes big-endian multi-byte types', () => {
    const body = new Uint8Array(8);
    new DataView(body.buffer).setInt32(0, -5, false);
    new DataView(body.buffer).setFloat32(4, 1.5, false);
    expect(Array.from(parseIdx(idx(0x0c, [1], body.subarray(0, 4))).data)).toEqual([-5]);
    expect(Array.from(parseIdx(idx(0x0d, [1], body.subarray(4))).data)).toEqual([1.5]);
  });

  it('corrupt IDX files are refused with DataFormatError naming the problem', () => {
    const good = idx(0x08, [2, 2], Uint8Array.of(1, 2, 3, 4));
    expect(Array.from(parseIdx(good).data)).toEqual([1, 2, 3, 4]);
    const badMagic = good.slice();
    badMagic[0] = 7;
    const cases: Array<[Uint8Array, string]> = [
      [badMagic, 'bad IDX magic number'],
      [idx(0x07, [4], Uint8Array.of(1, 2, 3, 4)), 'bad IDX magic number'],
      [good.subarray(0, good.length - 1), 'truncated'],
      [Uint8Array.from([...good, 0]), 'trailing data'],
      [good.subarray(0, 6), 'truncated IDX header'],
      [Uint8Array.of(0, 0), 'too short'],
      [gzipSync(good).subarray(0, 12), 'corrupt gzip'],
    ];
    for (const [bytes, msg] of cases) {
      const e = thrown(() => parseIdx(bytes, 'x.idx'));
      expect(e, msg).toBeInstanceOf(DataFormatError);
      expect(e.message).toContain(msg);
      expect(e.message).toContain('x.idx');
    }
    const dir = tmpDir();
    writeSet(dir, 't10k', 3);
    writeFileSync(join(dir, 't10k-labels-idx1-ubyte.gz'), gzipSync(idx(0x08, [2], Uint8Array.of(1, 2))));
    expect(thrown(() => loadFashionMnist({ split: 'test', dir })).message).toContain('label count differs');
    writeSet(dir, 't10k', 2, { labels: [1, 12] });
    expect(thrown(() => loadFashionMnist({ split: 'test', dir })).message).toContain('label out of range');
  });

  it('a missing dataset is a DataUnavailableError naming dataset-fashion-mnist', () => {
    const e = thrown(() => loadFashionMnist({ split: 'train', dir: join(tmpRoot, 'none') }));
    expect(e).toBeInstanceOf(DataUnavailableError);
    expect(e.message).toContain('install the Debian package dataset-fashion-mnist (apt-get install dataset-fashion-mnist)');
    expect(thrown(() => loadFashionMnist({ split: 'valid' as 'train' })).message).toContain('split');
  });

  const installed = existsSync('/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz');
  it.skipIf(!installed)(
    installed ? 'real Fashion-MNIST (dataset-fashion-mnist)' : 'real Fashion-MNIST — SKIPPED: not installed (apt-get install dataset-fashion-mnist)',
    () => {
      const t = loadFashionMnist({ split: 'test' });
      expect(t.count).toBe(10_000);
      expect(t.images.length).toBe(10_000 * 784);
      const hist = new Array(10).fill(0);
      for (const l of t.labels) hist[l]++;
      expect(hist).toEqual(new Array(10).fill(1000));
      let min = Infinity, max = -Infinity;
      for (const v of t.images) {
        if (v < min) min = v;
        if (v > max) max = v;
      }
      expect([min, max]).toEqual([0, 1]);
      expect(loadFashionMnist({ split: 'train', limit: 100 }).count).toBe(100);
    },
  );
});

// -------------------------------------------------------------------------------------------
describe('LM data', () => {
  const tokens = Int32Array.from({ length: 1000 }, (_, i) => (i * 37) % 97);

  it('batches: shapes, int32, targets are inputs shifted by one', () => {
    const b = new LMBatcher({ tokens, batchSize: 4, seqLen: 16, seed: 1 });
    const { input, target } = b.next();
    expect([...input.shape]).toEqual([4, 16]);
    expect([...target.shape]).toEqual([64]);
    expect(input.dtype).toBe('int32');
    expect(target.dtype).toBe('int32');
    const x = input.i32, y = target.i32;
    for (let r = 0; r < 4; r++) {
      const start = tokens.indexOf(x[r * 16]); // tokens are a permutation-like sequence: find the window
      for (let t = 0; t < 15; t++) expect(y[r * 16 + t]).toBe(x[r * 16 + t + 1]);
      expect(start).toBeGreaterThanOrEqual(0);
    }
  });

  it('same seed ⇒ same batches; other seed ⇒ other batches; an epoch visits every window start once', () => {
    const a = new LMBatcher({ tokens, batchSize: 3, seqLen: 10, seed: 7 });
    const b = new LMBatcher({ tokens, batchSize: 3, seqLen: 10, seed: 7 });
    const c = new LMBatcher({ tokens, batchSize: 3, seqLen: 10, seed: 8 });
    const ia = a.next().input.toArray();
    expect(b.next().input.toArray()).toEqual(ia);
    expect(c.next().input.toArray()).not.toEqual(ia);
    const order = a.epochOrder(0);
    const sorted = Array.from(order).sort((p, q) => p - q);
    expect(new Set(sorted).size).toBe(order.length);
    for (let i = 1; i < sorted.length; i++) expect(sorted[i] - sorted[i - 1]).toBe(10);
    expect(sorted[sorted.length - 1] + 11).toBeLessThanOrEqual(tokens.length);
    expect(Array.from(a.epochOrder(1))).not.toEqual(Array.from(order));
  });

  it('resume: state after n batches, restored into a new batcher, draws the identical next batches (across epochs)', () => {
    const opts = { tokens, batchSize: 5, seqLen: 20, seed: 42 };
    const original = new LMBatcher(opts);
    const perEpoch = original.windowsPerEpoch;
    const n = Math.ceil((perEpoch * 2) / 5) + 1; // past two epoch boundaries
    for (let i = 0; i < n; i++) original.next();
    const saved = JSON.parse(JSON.stringify(original.state()));
    expect(saved.epoch).toBeGreaterThanOrEqual(2);
    const expected = [original.next(), original.next(), original.next()];
    const resumed = new LMBatcher({ ...opts, seed: 0 }); // the state carries the seed
    resumed.setState(saved);
    for (const e of expected) {
      const got = resumed.next();
      expect(got.input.toArray()).toEqual(e.input.toArray());
      expect(got.target.toArray()).toEqual(e.target.toArray());
    }
    expect(resumed.state()).toEqual(original.state());
    expect(thrown(() => resumed.setState({ seed: 42, epoch: 0, cursor: 10_000 }))).toBeInstanceOf(RangeValueError);
    expect(thrown(() => resumed.setState({ seed: 42, epoch: -1, cursor: 0 })).message).toContain('state.epoch');
  });

  it('validates sizes with typed errors', () => {
    expect(thrown(() => new LMBatcher({ tokens: new Int32Array(10), batchSize: 1, seqLen: 10 })).message).toContain('seqLen + 1 = 11');
    expect(thrown(() => new LMBatcher({ tokens, batchSize: 0, seqLen: 4 })).message).toContain('batchSize');
    expect(thrown(() => evalBatches(new Int32Array(5), 2, 8)).message).toContain('too few eval tokens');
  });

  it('eval batches are deterministic, cover non-overlapping windows, and spread when capped', () => {
    const all = evalBatches(tokens, 8, 10);
    expect(all.length).toBe(Math.ceil(Math.floor(999 / 10) / 8)); // 99 windows → 13 batches, last one partial
    expect([...all[all.length - 1].input.shape]).toEqual([99 - 12 * 8, 10]);
    expect(all[0].input.toArray().slice(0, 10)).toEqual(Array.from(tokens.subarray(0, 10)));
    expect(all[0].input.toArray().slice(10, 20)).toEqual(Array.from(tokens.subarray(10, 20)));
    const again = evalBatches(tokens, 8, 10);
    expect(again.map((b) => b.input.toArray())).toEqual(all.map((b) => b.input.toArray()));
    const capped = evalBatches(tokens, 4, 10, 2);
    expect(capped.length).toBe(2);
    const firstTokens = capped.flatMap((b) => b.input.toArray().filter((_, i) => i % 10 === 0));
    expect(firstTokens[firstTokens.length - 1]).toBe(tokens[Math.floor((7 * 99) / 8) * 10]); // spread to the end
  });

  it('TokenStream: tail split of an ordered corpus (Moby-Dick, eval 5 %)', () => {
    const md = loadCorpus('moby-dick');
    const tok = buildTokenizer('char', md.documents.map((d) => d.text));
    const ts = TokenStream.fromCorpus(md, tok);
    const total = ts.train.tokens.length + ts.eval.tokens.length;
    expect(total).toBeGreaterThan(1_000_000);
    expect(ts.eval.tokens.length).toBe(Math.ceil(0.05 * total));
    expect(tok.decode(ts.eval.tokens.subarray(ts.eval.tokens.length - 200))).toContain('orphan'); // the book's last words
    expect(ts.labelNames[0]).toBe('contents');
    const b = ts.batcher({ batchSize: 2, seqLen: 64, seed: 0 }).next();
    expect(b.labels?.length).toBe(128);
    expect(ts.evalBatches(4, 64, 3).length).toBe(3);
  });

  it('TokenStream: labelled documents split per label; labels aligned with tokens and batches', () => {
    const labels = ['en', 'de', 'ru'];
    const corpus: Corpus = {
      name: 'toy',
      ordered: false,
      documents: Array.from({ length: 60 }, (_, i) => ({ text: `${labels[i % 3]} document number ${i} `.repeat(3), label: labels[i % 3] })),
    };
    const tok = new ByteTokenizer();
    const ts = TokenStream.fromCorpus(corpus, tok, { evalFraction: 0.1, seed: 5 });
    expect(ts.labelNames).toEqual(labels);
    // 20 documents per label, 2 held out from each.
    const evalText = tok.decode(ts.eval.tokens);
    for (const l of labels) expect(evalText.split(`${l} document number`).length - 1).toBe(2 * 3);
    expect(ts.train.labels.length).toBe(ts.train.tokens.length);
    // Every token's label matches the language prefix of its document.
    const text = tok.decode(ts.train.tokens);
    expect(text.length).toBe(ts.train.tokens.length); // ASCII: one byte per char
    let off = 0;
    for (const piece of text.split('\n\n').slice(0, -1)) {
      const want = labels.indexOf(piece.slice(0, 2));
      expect(want).toBeGreaterThanOrEqual(0);
      // The document's tokens and the separator after it carry its label.
      expect(Array.from(ts.train.labels.subarray(off, off + piece.length + 2)).every((l) => l === want)).toBe(true);
      off += piece.length + 2;
    }
    expect(off).toBe(text.length);
    const batch = ts.batcher({ batchSize: 3, seqLen: 12, seed: 1 }).next();
    const firstToken = batch.input.i32[0];
    expect(batch.labels?.[0]).toBeGreaterThanOrEqual(0);
    expect(firstToken).toBeGreaterThan(0);
    // Same seed ⇒ same split.
    const ts2 = TokenStream.fromCorpus(corpus, tok, { evalFraction: 0.1, seed: 5 });
    expect(Array.from(ts2.eval.tokens)).toEqual(Array.from(ts.eval.tokens));
    const enc = encodeCorpus(corpus, tok);
    expect(enc.tokens.length).toBe(ts.train.tokens.length + ts.eval.tokens.length);
  });
});
