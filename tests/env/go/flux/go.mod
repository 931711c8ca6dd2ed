// Pins the flux2 module for the end-to-end tests. build-peers builds cmd/flux
// inside a writable copy of this module's source (see build-peers for why).
module berth.invalid/tests/env/flux

go 1.26.0

require github.com/fluxcd/flux2/v2 v2.9.5
