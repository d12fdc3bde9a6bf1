import type { Handler } from "./handler.js";
export const BANK_HANDLERS: { [key: string]: Handler } = {};
