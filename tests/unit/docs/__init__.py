"""The documents: links that resolve, a layout that names the tree, a threat model whose tests exist."""
