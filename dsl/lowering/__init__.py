"""Lowering an .arch program to the layer graph, one module per concern.

The lowering is an evaluator: config arithmetic and sizes are computed now (so shape
mismatches are reported at the line that caused them, before anything runs); tensor
expressions become graph nodes. Values during lowering are Python numbers, strings,
bools, lists, symbolic `Dim`s, or `Tensor` handles on graph nodes.

    builder.py      the state: recorded errors, scopes, emitting nodes, constants, params
    expressions.py  names, arithmetic on numbers, sizes and tensors, indexing
    blocks.py       calling a user's block: binding and checking its arguments
    calls.py        what a call is (block, layer, op, scalar function); `LayerContext`
    statements.py   assignments, return, param, `layer` scopes, `repeat`
    model.py        `Lowerer`: config, the model's inputs and outputs, `weights` sections

Each is a class over the one before it; `Lowerer` is all of them. dsl/lower.py is the
entry point (`lower(path)`).
"""
