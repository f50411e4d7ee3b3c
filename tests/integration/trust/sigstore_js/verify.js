// Test-only second verifier: Sigstore's own JavaScript libraries (@sigstore/verify, @sigstore/bundle) check a
// signature the pipeline made, with a public key and no transparency log or timestamp (the pipeline is offline).
//
// stdin:  {"publicKey": "<PEM>", "dsseEnvelope": {...}}                     a DSSE envelope as stored in .att
//     or  {"publicKey": "<PEM>", "signature": "<b64>", "artifact": "<b64>"}  a cosign simple-signing layer (.sig)
// stdout: {"ok": true, "payloadType": "...", "payload": "<b64>"} (DSSE) or {"ok": true}; exit 0
//         {"ok": false, "code": "...", "message": "..."}; exit 1
"use strict";
const crypto = require("crypto");
const { bundleFromJSON } = require("@sigstore/bundle");
const { Verifier, toSignedEntity, toTrustMaterial } = require("@sigstore/verify");

const HINT = "veza-env-key";

function bundleOf(req) {
  const verificationMaterial = { publicKey: { hint: HINT }, tlogEntries: [],
    timestampVerificationData: { rfc3161Timestamps: [] } };
  const mediaType = "application/vnd.dev.sigstore.bundle.v0.3+json";
  if (req.dsseEnvelope) {
    return bundleFromJSON({ mediaType, verificationMaterial, dsseEnvelope: req.dsseEnvelope });
  }
  const digest = crypto.createHash("sha256").update(Buffer.from(req.artifact, "base64")).digest("base64");
  return bundleFromJSON({ mediaType, verificationMaterial, messageSignature: {
    messageDigest: { algorithm: "SHA2_256", digest }, signature: req.signature } });
}

function main(input) {
  const req = JSON.parse(input);
  const der = crypto.createPublicKey(req.publicKey).export({ type: "spki", format: "der" });
  const trust = toTrustMaterial({ certificateAuthorities: [], timestampAuthorities: [], tlogs: [], ctlogs: [] },
    { [HINT]: { rawBytes: der, keyDetails: "PKIX_ECDSA_P256_SHA_256" } });
  // a key, no Rekor entry, no TSA/SCT: the thresholds say so explicitly (the defaults require one of each)
  const verifier = new Verifier(trust, { tlogThreshold: 0, ctlogThreshold: 0, timestampThreshold: 0 });
  const bundle = bundleOf(req);
  const artifact = req.artifact ? Buffer.from(req.artifact, "base64") : undefined;
  verifier.verify(toSignedEntity(bundle, artifact));
  const out = { ok: true };
  if (bundle.content.$case === "dsseEnvelope") {
    out.payloadType = bundle.content.dsseEnvelope.payloadType;
    out.payload = Buffer.from(bundle.content.dsseEnvelope.payload).toString("base64");
  }
  return out;
}

let input = "";
process.stdin.on("data", (chunk) => { input += chunk; });
process.stdin.on("end", () => {
  try {
    process.stdout.write(JSON.stringify(main(input)) + "\n");
  } catch (err) {
    process.stdout.write(JSON.stringify({ ok: false, code: err.code || err.name, message: err.message }) + "\n");
    process.exitCode = 1;
  }
});
