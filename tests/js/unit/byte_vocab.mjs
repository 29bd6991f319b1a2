// Test support: a byte-level BPE vocabulary (GPT-2's byte-to-character table): token id b is byte b.

/** {character: id} for the 256 byte tokens. */
export function byteLevelVocab() {
  const vocab = {};
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    vocab[String.fromCharCode(printable ? b : 256 + extra++)] = b;
  }
  return vocab;
}
