import type { Handler } from "./handlers.js";
export const SHRED_HANDLERS: { [key: string]: Handler } = {};
