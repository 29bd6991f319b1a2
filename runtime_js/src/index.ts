// Public entry point of the webbuild browser runtime (dist/webbuild.js).
// Placeholder: re-exports the pure modules; the engine / worker API is added on top.

export * from "./errors.js";
export * from "./config.js";
export * from "./protocol.js";
export * from "./sampling.js";
export * from "./stop.js";
export * from "./tokenizer.js";
export * from "./sha256.js";
export * from "./progress.js";
export * from "./storage.js";
export * from "./artifacts.js";
