/**
 * alknet — the public API. Each concern is a namespace: `import { Vault } from "alknet"`.
 */
export * as EncryptedData from "./schema/EncryptedData.js"
export * as Identity from "./schema/Identity.js"
