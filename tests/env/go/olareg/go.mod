// Pins github.com/olareg/olareg for the end-to-end tests (built by tests/env/build-peers).
module berth.invalid/tests/env/olareg

go 1.22

require github.com/olareg/olareg v0.1.2

require (
	github.com/inconshreveable/mousetrap v1.1.0 // indirect
	github.com/opencontainers/go-digest v1.0.0 // indirect
	github.com/spf13/cobra v1.8.1 // indirect
	github.com/spf13/pflag v1.0.6 // indirect
)
