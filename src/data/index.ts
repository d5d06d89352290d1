/** Data that ships with the install: corpora, Fashion-MNIST, tokenizers and LM batching. */
export { DataUnavailableError, DataFormatError, installHint } from './errors.js';
export {
  loadCorpus,
  parseFortunes,
  detectEncoding,
  decodeText,
  corpusLabels,
  CORPUS_NAMES,
  DEFAULT_FORTUNES_DIR,
  type Corpus,
  type CorpusDocument,
  type CorpusName,
  type LoadCorpusOptions,
  type DecodeTextOptions,
} from './corpus.js';
export {
  loadFashionMnist,
  parseIdx,
  FASHION_MNIST_CLASSES,
  DEFAULT_FASHION_MNIST_DIR,
  type FashionMnist,
  type FashionMnistOptions,
  type IdxArray,
  type IdxType,
} from './fashion-mnist.js';
export {
  CharTokenizer,
  ByteTokenizer,
  BpeTokenizer,
  tokenizerFromJSON,
  buildTokenizer,
  bpeEncodingName,
  BPE_ENCODINGS,
  type Tokenizer,
  type TokenizerSpec,
  type TokenizerKind,
  type BpeEncodingName,
  type BpeRemapOptions,
  type BuildTokenizerOptions,
  type CharTokenizerOptions,
} from './tokenizer.js';
export {
  TokenStream,
  LMBatcher,
  evalBatches,
  encodeCorpus,
  type LabelledTokens,
  type LMBatch,
  type BatcherState,
  type LMBatcherOptions,
  type TokenStreamOptions,
} from './lm-data.js';
