import * as IdentityProvider from "../../src/services/IdentityProvider.js"
import * as IdentityStore from "../../src/services/IdentityStore.js"
import { resolutionSuite } from "../shared/resolutionSuite.js"

resolutionSuite("fixed entries (layerEntries)", IdentityProvider.layerEntries)
resolutionSuite("memory store", (peers, apiKeys) => IdentityStore.layerMemory({ peers, apiKeys }))
