import type { Handler } from "./handlers.js";
export const BANK_HANDLERS: { [key: string]: Handler } = {};
