module github.com/map646/map646

go 1.26.3

require (
	github.com/spf13/cobra v1.10.2
	gvisor.dev/gvisor v0.0.0-20260905035102-160fafc42237
)

require (
	github.com/inconshreveable/mousetrap v1.1.0 // indirect
	github.com/spf13/pflag v1.0.9 // indirect
)
