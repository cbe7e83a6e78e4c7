export interface ConnectResult { withoutUs: number; withUs: number; ratio: number; rounds: number; connectsPerRound: number }
export async function benchConnect(n: number): Promise<ConnectResult> { void n; throw new Error('todo'); }
