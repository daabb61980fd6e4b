/**
 * A config file that cannot be used (SPEC §11). `Read`: the file could not be read; `Invalid`: it is not valid
 * JSON or a field is wrong — the message names every offending field (`peers[1].peer_id: duplicate peer_id "a"`).
 */
import { Schema } from "effect"

export class ConfigError extends Schema.TaggedError<ConfigError>()("ConfigError", {
  reason: Schema.Literal("Read", "Invalid"),
  path: Schema.String,
  message: Schema.String
}) {}
