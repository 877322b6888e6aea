// Command bundletool does the bundle builder's two jobs that a shell script
// does badly: it makes OCI image archives without a container engine, and it
// writes and checks the bundle manifest (bundle.json) with a sha256 per file.
//
//	bundletool image --ref REF --out FILE [--entrypoint PATH] [--cmd ARG]... --add DEST=SRC...
//	bundletool manifest DIR < spec.json
//	bundletool check DIR
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "image":
		err = imageMain(os.Args[2:])
	case "manifest":
		if len(os.Args) != 3 {
			usage()
		}
		err = writeManifest(os.Args[2], os.Stdin)
	case "check":
		if len(os.Args) != 3 {
			usage()
		}
		err = checkManifest(os.Args[2])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bundletool %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: bundletool image --ref REF --out FILE [--entrypoint PATH] [--cmd ARG]... --add DEST=SRC...")
	fmt.Fprintln(os.Stderr, "       bundletool manifest DIR < spec.json")
	fmt.Fprintln(os.Stderr, "       bundletool check DIR")
	os.Exit(2)
}
