#!/usr/bin/env node
/** The `switchyard` command line. Subcommands live one per file in src/cli/. */
import { Command } from 'commander';
import { createRequire } from 'node:module';
import { infoCommand } from './info.js';

const require = createRequire(import.meta.url);
const pkg = require('../../package.json') as { version: string };

/** Build the root command (exported for tests). */
export function buildProgram(): Command {
  const program = new Command();
  program
    .name('switchyard')
    .description('Switchyard: Mixture-of-Experts for TypeScript. Build, train, inspect and serve sparse MoE models.')
    .version(pkg.version);
  program.addCommand(infoCommand());
  return program;
}

buildProgram().parse(process.argv);
