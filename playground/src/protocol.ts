/** Messages between the UI thread and the training Worker (structured-clone friendly, no engine types). */
import type { Settings } from './settings.js';

export type ToWorker =
  | { type: 'init'; settings: Settings }
  | { type: 'settings'; settings: Settings; version: number }
  | { type: 'run' }
  | { type: 'pause' }
  | { type: 'step'; steps: number }
  | { type: 'reset'; settings: Settings; version: number };

/** One training step's numbers. */
export interface StepRecord {
  step: number;
  /** Task loss (cross-entropy), without the auxiliary losses. */
  loss: number;
  aux: number;
  dropFraction: number;
  droppedTokens: number;
  tokens: number;
  routerEntropy: number;
  loadImbalance: number;
  /** Share of the processed assignments per expert (sums to 1). */
  load: number[];
  /** Settings version this step ran with (the UI averages drop rates over the current version only). */
  version: number;
}

/** Routing of the text panel's characters. */
export interface TextView {
  kind: 'char';
  text: string;
  /** Expert each character went to (its best kept assignment), -1 when every assignment was dropped. */
  primary: Int8Array;
  /** Router probability per (character, expert), row-major [text.length, experts]. */
  probs: Float32Array;
  /** Bit e set when the character's assignment to expert e was kept. */
  kept: Int32Array;
  experts: number;
}

/** The 2-D plane: winning expert and predicted class per grid cell, plus the training points. */
export interface PlaneView {
  kind: 'plane';
  grid: number;
  winner: Uint8Array;
  predicted: Uint8Array;
  points: Float32Array;
  labels: Uint8Array;
  accuracy: number;
  experts: number;
}

/** Images: the share of each class's images each expert got, and a few thumbnails with their expert. */
export interface ImageView {
  kind: 'images';
  classes: string[];
  /** [classes, experts] row-normalised. */
  classByExpert: Float32Array;
  thumbs: Uint8Array;
  thumbExpert: Int8Array;
  side: number;
  accuracy: number;
  experts: number;
  source: string;
}

export type TaskView = TextView | PlaneView | ImageView;

export type FromWorker =
  | { type: 'ready'; backend: string; params: number; version: number }
  | { type: 'backend'; backend: string }
  | { type: 'steps'; records: StepRecord[]; stepsPerSecond: number; running: boolean }
  | { type: 'view'; view: TaskView; step: number }
  | { type: 'error'; message: string };
