import type { Command } from "commander"; export function registerDoctor(_p: Command): void {}
