// JSON files the bundle imports (esbuild inlines them): typed `unknown` here and narrowed where used,
// so tsc neither needs resolveJsonModule nor pulls the file (outside src/) into the program.
declare module "*.schema.json" {
  const value: unknown;
  export default value;
}
