import type { Handler } from "./handlers.js";
export const POL_HANDLERS: { [key: string]: Handler } = {};
