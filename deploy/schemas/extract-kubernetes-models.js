// Prints, as JSON, the schema a @kubernetes-models package (crd-generate, versions before 4.4)
// embeds in one of its model modules: `const schema = {...};`.
//   node extract-kubernetes-models.js package/monitoring.coreos.com/v1/ServiceMonitor.js
"use strict";
const fs = require("fs");
const vm = require("vm");

const source = fs.readFileSync(process.argv[2], "utf8");
const start = source.indexOf("const schema = ");
if (start < 0) throw new Error(`no embedded schema in ${process.argv[2]}`);
const end = source.indexOf("};\n", start);
const literal = source.slice(start + "const schema = ".length, end + 1);
process.stdout.write(JSON.stringify(vm.runInNewContext(`(${literal})`), null, 1) + "\n");
