/** A mistake in what the user typed: reported as one line, exit status 2. */
export class UsageError extends Error {}
