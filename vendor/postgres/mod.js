// @ts-self-types="./mod.d.ts"
export { default } from "./src/index.js";
