// Command gen writes the JSON Schema of every registered event type, and the
// index of types and codes, into a directory (schemas/ under go generate),
// removing the files of types that are no longer registered.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/tollgate-db/tollgate/schemas/internal/generate"
)

func main() {
	dir := flag.String("dir", ".", "directory to write the schema files into")
	flag.Parse()
	if err := generate.Write(*dir); err != nil {
		fmt.Fprintln(os.Stderr, "schemas/gen:", err)
		os.Exit(1)
	}
}
