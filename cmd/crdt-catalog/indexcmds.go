package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"text/tabwriter"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	"github.com/crdt-catalog/crdt-catalog/node"
	"github.com/crdt-catalog/crdt-catalog/node/query"
)

// indexPath returns the API path of the index on field of coll, checked
// as the node checks them.
func indexPath(coll, field string) (string, error) {
	if err := crdt.ValidateCollection(coll); err != nil {
		return "", usageErr("collection: %w", err)
	}
	if err := query.ValidateField(field); err != nil {
		return "", usageErr("field: %w", err)
	}
	return "/catalog/indexes/" + url.PathEscape(coll) + "/" + url.PathEscape(field), nil
}

// runIndexes prints GET /catalog/indexes: a table of the indexes and their
// build progress, or the node's JSON.
func runIndexes(ctx context.Context, c *client, _ *clientOpts, _ []string) error {
	b, _, err := c.getJSON(ctx, request{method: http.MethodGet, path: "/catalog/indexes"})
	if err != nil {
		return err
	}
	if c.output != "table" {
		return c.printJSON(b)
	}
	var r struct {
		Indexes []node.IndexStatus `json:"indexes"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("the node's answer is not a list of indexes: %w", err)
	}
	return c.printIndexes(r.Indexes...)
}

// printIndexes prints indexes as a table.
func (c *client) printIndexes(indexes ...node.IndexStatus) error {
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "COLLECTION\tFIELD\tSTATE\tINDEXED\tDECLARED\tERROR")
	for _, ix := range indexes {
		declared := "api"
		switch {
		case ix.Config && ix.API:
			declared = "flag+api"
		case ix.Config:
			declared = "flag"
		case !ix.API:
			declared = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\t%s\t%s\n", ix.Collection, ix.Field, ix.State, ix.Indexed, ix.Total, declared, ix.Error)
	}
	return tw.Flush()
}

// runIndexAdd adds an index (PUT /catalog/indexes/C/F) and prints its
// status.
func runIndexAdd(ctx context.Context, c *client, _ *clientOpts, args []string) error {
	path, err := indexPath(args[0], args[1])
	if err != nil {
		return err
	}
	b, _, err := c.getJSON(ctx, request{method: http.MethodPut, path: path})
	if err != nil {
		return err
	}
	if c.output != "table" {
		return c.printJSON(b)
	}
	var st node.IndexStatus
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("the node's answer is not an index: %w", err)
	}
	return c.printIndexes(st)
}

// runIndexDrop drops an index (DELETE /catalog/indexes/C/F).
func runIndexDrop(ctx context.Context, c *client, _ *clientOpts, args []string) error {
	path, err := indexPath(args[0], args[1])
	if err != nil {
		return err
	}
	b, _, err := c.getJSON(ctx, request{method: http.MethodDelete, path: path})
	if err != nil {
		return err
	}
	if c.output != "table" {
		return c.printJSON(b)
	}
	_, err = fmt.Fprintf(c.stdout, "dropped index %s.%s (its entries are deleted in the background)\n", args[0], args[1])
	return err
}
