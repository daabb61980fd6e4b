import { Layer } from "effect"
import * as CredentialStore from "../../src/services/CredentialStore.js"
import * as IdentityStore from "../../src/services/IdentityStore.js"
import { storeSuite } from "../shared/storeSuite.js"

storeSuite("memory", () => Layer.merge(IdentityStore.layerMemory(), CredentialStore.layerMemory))
