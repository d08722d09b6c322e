package config

import (
	"context"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"golang.org/x/sys/unix"
)

// Limits on what Load reads. The configuration is hostile input like any
// other: a file name that leads to /dev/zero, a FIFO or a 100,000-deep
// nesting must give an error, not exhaust memory, hang or overflow the
// parser's stack. docs/configuration.md lists the same values.
const (
	// MaxConfigBytes caps the HCL file: room for some 3,000 mapping
	// blocks. The HCL lexer and parser allocate up to about 1 KiB per
	// byte of hostile input (one token per byte) and the appliance VM may
	// have 128 MiB; larger tables belong in a mappings_file, which costs
	// a few bytes per byte.
	MaxConfigBytes = 256 << 10
	// MaxMappingsBytes caps the mappings_file: room for several million
	// "ipv4,ipv6" lines (a 1M-line table of typical lines is ~35 MiB).
	MaxMappingsBytes = 256 << 20
	// MaxNesting caps how deeply brackets, braces, parentheses, template
	// interpolations and runs of unary operators nest in the HCL file.
	// The HCL parser recurses once per level; the deepest valid
	// configuration nests four levels.
	MaxNesting = 64
)

// fileSource is where Load finds the HCL file and its mappings_file: the
// whole file system, or only inside one directory (a config drive).
type fileSource struct {
	root    *os.Root // nil: the whole file system
	rootDir string   // the directory root was opened on
}

// open opens path for reading without blocking: a FIFO with no writer
// would block an ordinary open, and a device would block its reads.
// Inside a root, path must lie within the root's directory; os.Root
// refuses "..", absolute names and symbolic links that lead outside.
func (s fileSource) open(path string) (*os.File, error) {
	const flags = os.O_RDONLY | unix.O_NONBLOCK | unix.O_NOCTTY
	if s.root == nil {
		return os.OpenFile(path, flags, 0)
	}
	rel, err := filepath.Rel(s.rootDir, path)
	if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return nil, fmt.Errorf("%s is outside %s: a configuration there may only name files beside it", path, s.rootDir)
	}
	f, err := s.root.OpenFile(rel, flags, 0)
	if err != nil {
		return nil, fmt.Errorf("%s: %w (a configuration in %s may only name files inside it)", path, err, s.rootDir)
	}
	return f, nil
}

// readFile reads the regular file at path, at most limit bytes. Anything
// else (a device, FIFO, socket or directory) is refused before a byte is
// read.
func (s fileSource) readFile(path string, limit int64) ([]byte, error) {
	f, err := s.open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file (%s)", path, fileKind(fi.Mode()))
	}
	if fi.Size() > limit {
		return nil, fmt.Errorf("%s is %d bytes, more than the limit of %d", path, fi.Size(), limit)
	}
	// The file may grow between the stat and the read.
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is more than the limit of %d bytes", path, limit)
	}
	return b, nil
}

func fileKind(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&os.ModeNamedPipe != 0:
		return "a FIFO"
	case m&os.ModeSocket != 0:
		return "a socket"
	case m&os.ModeCharDevice != 0:
		return "a character device"
	case m&os.ModeDevice != 0:
		return "a block device"
	}
	return m.Type().String()
}

// ReadFile reads the HCL file at path as Load does: a regular file of at
// most MaxConfigBytes, opened without blocking.
func ReadFile(path string) ([]byte, error) {
	return fileSource{}.readFile(path, MaxConfigBytes)
}

// Load reads and checks the HCL file at path (and its mappings_file).
// Both must be regular files within MaxConfigBytes and MaxMappingsBytes.
// An invalid file gives an *Error.
func Load(path string) (*Config, error) {
	return load(fileSource{}, path)
}

// LoadContext is Load that gives up when ctx ends: a reload must never
// hold up a shutdown, and a read from a hung file system must not hang
// the caller. An abandoned load finishes in the background and its
// result is discarded.
//
// With root set, path and the mappings_file it names must lie inside the
// directory root (a config drive): "..", absolute names elsewhere and
// symbolic links that lead out of it are refused.
func LoadContext(ctx context.Context, path, root string) (*Config, error) {
	src := fileSource{}
	if root != "" {
		r, err := os.OpenRoot(root)
		if err != nil {
			return nil, err
		}
		src = fileSource{root: r, rootDir: filepath.Clean(root)}
	}
	type result struct {
		c   *Config
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := load(src, path)
		if src.root != nil {
			src.root.Close()
		}
		done <- result{c, err}
	}()
	select {
	case r := <-done:
		return r.c, r.err
	case <-ctx.Done():
		return nil, fmt.Errorf("reading %s: %w", path, context.Cause(ctx))
	}
}

func load(src fileSource, path string) (*Config, error) {
	b, err := src.readFile(path, MaxConfigBytes)
	if err != nil {
		return nil, err
	}
	if src.root == nil {
		return Parse(b, path)
	}
	return parse(b, path, src)
}

// checkNesting refuses src when its brackets, braces, parentheses,
// quoted templates, interpolations, conditionals or unary operators nest
// more than MaxNesting deep. It runs the HCL lexer, which does not
// recurse, before the parser, which does: a deep enough file would
// overflow the stack and kill the process (a fatal error, not a panic
// that can be recovered), and one short of that still costs a stack of
// about a kilobyte per level on top of the parser's heap.
//
// It also refuses for expressions ("[for x in xs: ...]", "{for ...}")
// and template for directives ("%{for x in xs}"): evaluating nested ones
// multiplies their collections' lengths, so that a file of 500 bytes
// with five of them nested over 31-element lists evaluates 28 million
// values, for a minute and hundreds of MiB, and one more level exhausts
// the memory of the appliance (a load given up after ConfigLoadTimeout
// goes on in the background). A configuration has no use for them.
//
// And it bounds numbers and operators (numberProblem). HCL's numbers are
// arbitrary precision, and writing one out in decimal, which a string
// attribute, an interpolation or a diagnostic does, takes time and memory
// in proportion to its exponent: "queues = 1e-100000000" hung the load.
// A chain of binary operators ("1+1+1+...") parses into a tree as deep as
// it is long, with no bracket to count, which evaluating walks
// recursively: 256 KiB of "1+" took 256 MiB of stack.
func checkNesting(src []byte, filename string) hcl.Diagnostics {
	toks, _ := hclsyntax.LexConfig(src, filename, hcl.InitialPos)
	depth, unary, splats, conds, ops := 0, 0, 0, 0, 0
	for i, t := range toks {
		if seeThrough(t.Type) {
			// HCL ignores newlines inside brackets, and comments
			// anywhere: neither ends a run of unary operators nor
			// makes the next "-" unary.
			continue
		}
		if forKeyword(toks, i) {
			return hcl.Diagnostics{{
				Severity: hcl.DiagError,
				Summary:  "For expressions are not allowed",
				Detail:   "map646 refuses for expressions and %{for} template directives before parsing the file: nested ones multiply the work of evaluating them, and a configuration is written out in full.",
				Subject:  t.Range.Ptr(),
			}}
		}
		switch t.Type {
		case hclsyntax.TokenOBrace, hclsyntax.TokenOBrack, hclsyntax.TokenOParen,
			hclsyntax.TokenTemplateInterp, hclsyntax.TokenTemplateControl,
			hclsyntax.TokenOQuote, hclsyntax.TokenOHeredoc:
			depth++
			unary = 0
		case hclsyntax.TokenCBrace, hclsyntax.TokenCBrack, hclsyntax.TokenCParen,
			hclsyntax.TokenTemplateSeqEnd, hclsyntax.TokenCQuote, hclsyntax.TokenCHeredoc:
			depth--
			unary = 0
		case hclsyntax.TokenBang, hclsyntax.TokenMinus:
			unary++ // "!!!!x" and "----1" recurse too
		case hclsyntax.TokenStar:
			// Each splat ("[*]", ".*") nests the rest of its traversal
			// in another splat expression. A configuration has no use
			// for splats at all, so they are counted over the file.
			if p := prevSignificant(toks, i); p == hclsyntax.TokenOBrack || p == hclsyntax.TokenDot {
				splats++
			}
			unary = 0
		case hclsyntax.TokenQuestion:
			// Each conditional parses (and evaluates) both its
			// results as expressions of their own: "a?b:c?d:e?..."
			// recurses once per "?" with no bracket to count, 64,000
			// deep in a file within MaxConfigBytes. A configuration
			// has no use for many conditionals, so, as splats, they
			// are counted over the file.
			conds++
			unary = 0
		default:
			unary = 0
		}
		if depth+unary+splats+conds > MaxNesting {
			return hcl.Diagnostics{{
				Severity: hcl.DiagError,
				Summary:  "Nesting too deep",
				Detail:   fmt.Sprintf("Brackets, braces, parentheses, templates, conditionals or unary operators nest more than %d levels deep here (splats and conditionals count over the whole file); map646 refuses such a file before parsing it.", MaxNesting),
				Subject:  t.Range.Ptr(),
			}}
		}
		if d := numberProblem(toks, i, &ops); d != nil {
			return hcl.Diagnostics{d}
		}
	}
	return nil
}

// forKeyword reports whether toks[i] is the "for" that starts a for
// expression or a template for directive: the parser takes an identifier
// "for" as one right after an open bracket or brace (newlines between are
// ignored there) or after the "%{" (or "%{~") of a template directive.
// An attribute named "for" directly in a block is reported too,
// which costs nothing: no block of the configuration has one.
func forKeyword(toks hclsyntax.Tokens, i int) bool {
	if toks[i].Type != hclsyntax.TokenIdent || string(toks[i].Bytes) != "for" {
		return false
	}
	switch prevSignificant(toks, i) {
	case hclsyntax.TokenOBrack, hclsyntax.TokenOBrace, hclsyntax.TokenTemplateControl:
		return true
	}
	return false
}

// seeThrough reports whether a token of type ty is one the token
// counters look past: a newline (which the parser ignores inside
// brackets, where "(1\n-1)" is a subtraction and "(-\n-\n1)" one run of
// minus signs) or a comment ("[/**/for ...]" is a for expression).
// Counting past a newline that ends an attribute only refuses more.
func seeThrough(ty hclsyntax.TokenType) bool {
	return ty == hclsyntax.TokenNewline || ty == hclsyntax.TokenComment
}

// prevSignificant is the type of the last token before toks[i] that is
// not seeThrough, or TokenNil if there is none.
func prevSignificant(toks hclsyntax.Tokens, i int) hclsyntax.TokenType {
	for j := i - 1; j >= 0; j-- {
		if !seeThrough(toks[j].Type) {
			return toks[j].Type
		}
	}
	return hclsyntax.TokenNil
}

// Bounds on numbers and operators (checkNesting): literals are at most
// maxNumberLen bytes and, unless 0, between 2^-maxNumberExp and
// 2^maxNumberExp in magnitude; at most maxOperators binary operators in
// the file. An expression's tree is then at most maxOperators deep
// (besides the nesting MaxNesting bounds), and products and quotients of
// such literals stay within about 2^8300, which decimal writes out in
// 2,500 digits. The configuration's largest number is a 32-bit AS number,
// and it has no use for arithmetic.
const (
	maxNumberLen = 64
	maxNumberExp = 128
	maxOperators = MaxNesting
)

// numberProblem reports a number literal out of bounds at toks[i], or
// the binary operator there that is one too many (ops counts them over
// the file; the "*" of a splat and a unary "-" are none).
func numberProblem(toks hclsyntax.Tokens, i int, ops *int) *hcl.Diagnostic {
	t := toks[i]
	switch t.Type {
	case hclsyntax.TokenNumberLit:
		if len(t.Bytes) <= maxNumberLen {
			// An exponent too large for big.Float is an error.
			f, _, err := big.ParseFloat(string(t.Bytes), 10, 64, big.ToNearestEven)
			if err == nil {
				if exp := f.MantExp(nil); f.Sign() == 0 || exp >= -maxNumberExp && exp <= maxNumberExp {
					return nil
				}
			}
		}
		return &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Number out of range",
			Detail:   fmt.Sprintf("map646 refuses number literals longer than %d bytes or beyond 2^%d (or, but for 0, below 2^-%d) before parsing the file: writing one out in decimal takes time and memory in proportion to its exponent.", maxNumberLen, maxNumberExp, maxNumberExp),
			Subject:  t.Range.Ptr(),
		}
	case hclsyntax.TokenStar:
		if p := prevSignificant(toks, i); p == hclsyntax.TokenOBrack || p == hclsyntax.TokenDot {
			return nil // a splat
		}
	case hclsyntax.TokenMinus:
		switch prevSignificant(toks, i) {
		case hclsyntax.TokenNumberLit, hclsyntax.TokenIdent, hclsyntax.TokenCBrack, hclsyntax.TokenCParen,
			hclsyntax.TokenCBrace, hclsyntax.TokenCQuote, hclsyntax.TokenCHeredoc:
		default:
			return nil // unary: what follows no operand (checkNesting counts runs of them)
		}
	case hclsyntax.TokenPlus, hclsyntax.TokenSlash, hclsyntax.TokenPercent,
		hclsyntax.TokenEqualOp, hclsyntax.TokenNotEqual,
		hclsyntax.TokenLessThan, hclsyntax.TokenLessThanEq, hclsyntax.TokenGreaterThan, hclsyntax.TokenGreaterThanEq,
		hclsyntax.TokenAnd, hclsyntax.TokenOr:
	default:
		return nil
	}
	if *ops++; *ops <= maxOperators {
		return nil
	}
	return &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  "Too many operators",
		Detail:   fmt.Sprintf("map646 refuses a file with more than %d binary operators (+ - * / %% == != < <= > >= && ||) before parsing it: a chain of them nests as deep as it is long, and products can make a number too large to write out.", maxOperators),
		Subject:  t.Range.Ptr(),
	}
}

// checkOperands refuses an operand of arithmetic (+ - * / % and unary -)
// or of an ordering comparison (< <= > >=) that is not a number by its
// form: a number literal, arithmetic, or a conditional or parentheses
// around one. HCL converts a string operand to a number and the result,
// in a template, back to a string: "${-"1e-100000000"}" holds no number
// literal for numberProblem to bound and hung the load writing 10^8
// digits. The configuration has no use for arithmetic on strings.
func checkOperands(body *hclsyntax.Body) hcl.Diagnostics {
	return hclsyntax.VisitAll(body, func(n hclsyntax.Node) hcl.Diagnostics {
		var operands []hclsyntax.Expression
		switch e := n.(type) {
		case *hclsyntax.BinaryOpExpr:
			if numberOperation(e.Op) {
				operands = []hclsyntax.Expression{e.LHS, e.RHS}
			}
		case *hclsyntax.UnaryOpExpr:
			if e.Op == hclsyntax.OpNegate {
				operands = []hclsyntax.Expression{e.Val}
			}
		}
		for _, o := range operands {
			if !numberForm(o) {
				return hcl.Diagnostics{{
					Severity: hcl.DiagError,
					Summary:  "Operand is not a number",
					Detail:   "map646 takes only numbers (number literals, arithmetic on them, conditionals between them) as operands of + - * / % < <= > >=: HCL would convert a string to a number, with no bound on its exponent, and writing such a number out takes time in proportion to it.",
					Subject:  o.Range().Ptr(),
				}}
			}
		}
		return nil
	})
}

// numberOperation reports whether op converts its operands to numbers.
func numberOperation(op *hclsyntax.Operation) bool {
	switch op {
	case hclsyntax.OpAdd, hclsyntax.OpSubtract, hclsyntax.OpMultiply, hclsyntax.OpDivide, hclsyntax.OpModulo,
		hclsyntax.OpLessThan, hclsyntax.OpLessThanOrEqual, hclsyntax.OpGreaterThan, hclsyntax.OpGreaterThanOrEqual:
		return true
	}
	return false
}

// numberForm reports whether e is a number by its form alone (its own
// operands are checked where checkOperands visits them).
func numberForm(e hclsyntax.Expression) bool {
	switch e := e.(type) {
	case *hclsyntax.LiteralValueExpr:
		return e.Val.Type() == cty.Number
	case *hclsyntax.ParenthesesExpr:
		return numberForm(e.Expression)
	case *hclsyntax.BinaryOpExpr:
		switch e.Op {
		case hclsyntax.OpAdd, hclsyntax.OpSubtract, hclsyntax.OpMultiply, hclsyntax.OpDivide, hclsyntax.OpModulo:
			return true
		}
	case *hclsyntax.UnaryOpExpr:
		return e.Op == hclsyntax.OpNegate
	case *hclsyntax.ConditionalExpr:
		return numberForm(e.TrueResult) && numberForm(e.FalseResult)
	}
	return false
}
