// An append-only line file that is compacted by an atomic rewrite: the shape of every record the
// knock daemon keeps across restarts (the grants). Appends are one write(2) per line, so
// a crash leaves at most a torn last line, which the reader's own line pattern ignores; a rewrite
// goes to a temporary file renamed over the journal, so a reader never sees half a file.
import { closeSync, openSync, readFileSync, renameSync, writeFileSync, writeSync } from 'node:fs';
import path from 'node:path';
import { makeDirectory } from '../config/dirs.js';

export class Journal {
  #fd: number | null = null;

  private constructor(readonly file: string) {}

  /** Opens FILE (its directory made private if missing) and returns it with its lines (none if it does not exist). */
  static open(file: string): { journal: Journal; lines: string[] } {
    makeDirectory(path.dirname(file), 'state directory');
    let text = '';
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new Error(`${file}: ${(err as Error).message}`);
    }
    return { journal: new Journal(file), lines: text.split('\n') };
  }

  /** Appends one line; throws once the journal is closed (a record that cannot be kept must not be acted on). */
  append(line: string): void {
    if (this.#fd === null) throw new Error(`${this.file} is closed`);
    writeSync(this.#fd, `${line}\n`);
  }

  /** Replaces the whole file with these lines, atomically, and appends there from now on. */
  rewrite(lines: Iterable<string>): void {
    let body = '';
    for (const l of lines) body += `${l}\n`;
    const tmp = path.join(path.dirname(this.file), `.${path.basename(this.file)}.${process.pid}.tmp`);
    writeFileSync(tmp, body, { mode: 0o600 });
    renameSync(tmp, this.file);
    if (this.#fd !== null) closeSync(this.#fd);
    this.#fd = openSync(this.file, 'a', 0o600);
  }

  close(): void {
    if (this.#fd !== null) closeSync(this.#fd);
    this.#fd = null;
  }
}
