import postgres = require("./types/index.d.ts");
export default postgres;
