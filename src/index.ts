/**
 * alknet — the public API. Each concern is a namespace: `import { Vault } from "alknet"`.
 */
export * as EncryptedData from "./schema/EncryptedData.js"
export * as Identity from "./schema/Identity.js"
export * as DerivedKey from "./schema/DerivedKey.js"
export * as HdPath from "./schema/HdPath.js"
export * as Vault from "./services/Vault.js"
export * as VaultError from "./errors/VaultError.js"
export * as Endpoint from "./services/Endpoint.js"
export * as EndpointError from "./errors/EndpointError.js"
export * as Tls from "./services/Tls.js"
export * as Quic from "./layers/quic/Quic.js"
