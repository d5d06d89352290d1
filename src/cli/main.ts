#!/usr/bin/env node
/** The `switchyard` command line. Subcommands live one per file in src/cli/. */
import { Command, CommanderError } from 'commander';
import { createRequire } from 'node:module';
import { benchCommand } from './bench.js';
import { errorLine } from './common.js';
import { compareCommand } from './compare.js';
import { demoCommand } from './demo.js';
import { evalCommand } from './eval.js';
import { expertServerCommand } from './expert-server.js';
import { infoCommand } from './info.js';
import { inspectCommand } from './inspect.js';
import { loraCommand } from './lora.js';
import { playgroundCommand } from './playground.js';
import { importCommand } from './import.js';
import { sampleCommand } from './sample.js';
import { serveCommand } from './serve.js';
import { trainCommand } from './train.js';

const require = createRequire(import.meta.url);
const pkg = require('../../package.json') as { version: string };

// Whether commander has printed the error it is about to throw (an InvalidArgumentError thrown
// from inside an action reaches main() unprinted).
let errorPrinted = false;

/** Build the root command (exported for tests). */
export function buildProgram(): Command {
  const program = new Command();
  program
    .name('switchyard')
    .description('Switchyard: Mixture-of-Experts for TypeScript. Build, train, inspect and serve sparse MoE models.')
    .version(pkg.version)
    .showSuggestionAfterError(false);
  for (const cmd of [demoCommand(), trainCommand(), evalCommand(), sampleCommand(), inspectCommand(), importCommand(), compareCommand(), benchCommand(), infoCommand(), serveCommand(), expertServerCommand(), playgroundCommand(), loraCommand()]) {
    program.addCommand(cmd);
  }
  // Errors become one line on stderr and a non-zero exit, never a stack trace.
  const quiet = (c: Command): void => {
    c.exitOverride();
    c.showSuggestionAfterError(false);
    c.configureOutput({
      outputError: (str, write) => {
        errorPrinted = true;
        write(`switchyard: ${str.replace(/^error: /, '').trim()}\n`);
      },
    });
    c.commands.forEach(quiet);
  };
  quiet(program);
  return program;
}

async function main(): Promise<void> {
  try {
    await buildProgram().parseAsync(process.argv);
  } catch (e) {
    if (e instanceof CommanderError) {
      // commander has printed its one-line message (or help/version, exit 0), unless an action threw it.
      if (!errorPrinted && e.exitCode !== 0) process.stderr.write(`switchyard: ${errorLine(e)}\n`);
      process.exitCode = e.exitCode;
      return;
    }
    process.stderr.write(`switchyard: ${errorLine(e)}\n`);
    process.exitCode = 1;
  }
}

await main();
