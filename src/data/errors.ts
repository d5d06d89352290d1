/** Typed errors of the data layer (corpora, image sets, tokenizers, batchers). */
import { SwitchyardError } from '../errors.js';

/**
 * A corpus or data set is not on this machine: `field` names what was asked for (corpus name,
 * path, split), `value` its value, and the message says how to get it (for the optional corpora:
 * the Debian package to install, in `debianPackages` too).
 */
export class DataUnavailableError extends SwitchyardError {
  /** The Debian packages that would provide the data (empty when the data is not a Debian package). */
  readonly debianPackages: readonly string[];
  constructor(field: string, value: unknown, message: string, debianPackages: readonly string[] = []) {
    super(field, value, message);
    this.debianPackages = Object.freeze([...debianPackages]);
  }
}

/** A data file is malformed (bad IDX magic number, truncated body, undecodable text, ...). */
export class DataFormatError extends SwitchyardError {}

/** The sentence naming Debian packages to install, e.g. "install the Debian package fortunes-de (apt-get install fortunes-de)". */
export function installHint(packages: readonly string[]): string {
  const noun = packages.length === 1 ? 'package' : 'packages';
  return `install the Debian ${noun} ${packages.join(', ')} (apt-get install ${packages.join(' ')})`;
}
