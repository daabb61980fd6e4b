import * as H from "./harness.js"
import { peerSuite } from "./suite.js"

peerSuite(H.quic)
peerSuite(H.webSocket)
