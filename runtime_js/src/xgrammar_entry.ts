// The grammar engine's bundle (dist/xgrammar.js): npm @mlc-ai/web-xgrammar, loaded by grammar.ts on
// the first request with a response_format, so that pages that never constrain their output do not
// download it (~1.1 MB with its WebAssembly inlined). The package is a UMD build: imported as an
// ES module it has no exports and defines `globalThis.xgrammar` instead.
import "@mlc-ai/web-xgrammar";
import type * as XGrammar from "@mlc-ai/web-xgrammar";

export default (globalThis as unknown as { xgrammar: typeof XGrammar }).xgrammar;
