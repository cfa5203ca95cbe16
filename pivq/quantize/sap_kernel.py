"""The Triton kernel of pivq.quantize.device_solver (its own module: importing Triton costs about 0.1 s, paid
only where the device solver runs). See device_solver's docstring for the algorithm."""

import triton
import triton.language as tl


@triton.jit
def sap_kernel(cost_ptr, u_ptr, v_ptr, col4row_ptr, row4col_ptr, status_ptr, scans_ptr, n_rows, n_cols,
               max_scans, BLOCK_ROWS: tl.constexpr, BLOCK_COLS: tl.constexpr):
    """One problem per program; u, v, col4row, row4col are read and written in place; status: 0 solved,
    1 no augmenting path (infeasible), 2 scan limit reached; scans: the row scans it took."""
    prob = tl.program_id(0).to(tl.int64)
    rows = tl.arange(0, BLOCK_ROWS)
    cols = tl.arange(0, BLOCK_COLS)
    row_ok = rows < n_rows
    col_ok = cols < n_cols
    cost_base = cost_ptr + prob * n_rows * n_cols
    u_base = u_ptr + prob * n_rows
    col4row_base = col4row_ptr + prob * n_rows
    row4col_base = row4col_ptr + prob * n_cols
    v = tl.load(v_ptr + prob * n_cols + cols, mask=col_ok, other=0.0)
    col_free = tl.load(row4col_base + cols, mask=col_ok, other=0) < 0
    free = row_ok & (tl.load(col4row_base + rows, mask=row_ok, other=0) < 0)
    status = tl.program_id(0) * 0  # an int32 zero
    scans = status
    while (tl.sum(free.to(tl.int32), axis=0) > 0) & (status == 0):
        start = tl.min(tl.where(free, rows, BLOCK_ROWS), axis=0)
        shortest = tl.full([BLOCK_COLS], float("inf"), tl.float64)
        path = tl.full([BLOCK_COLS], -1, tl.int32)
        scanned = cols < 0  # the columns whose shortest path cost is final (scipy's SC)
        in_tree = rows < 0  # the rows reached (scipy's SR)
        reach = tl.zeros([BLOCK_ROWS], tl.float64)  # shortest[col4row[i]] when row i joined the tree
        min_val = tl.sum(reach, axis=0)  # a float64 zero
        row = start
        sink = start * 0 - 1
        while (sink < 0) & (status == 0):
            in_tree = in_tree | (rows == row)
            u_row = tl.load(u_base + row)
            c = tl.load(cost_base + row.to(tl.int64) * n_cols + cols, mask=col_ok, other=float("inf"))
            r = min_val + c - u_row - v
            better = col_ok & (~scanned) & (r < shortest)
            path = tl.where(better, row, path)
            shortest = tl.where(better, r, shortest)
            candidate = col_ok & (~scanned)
            lowest = tl.min(tl.where(candidate, shortest, float("inf")), axis=0)
            # scipy's tie rule: among the cheapest, an unassigned column ends the search at once
            key = tl.where(candidate & (shortest == lowest), cols + tl.where(col_free, 0, BLOCK_COLS),
                           2 * BLOCK_COLS)
            col = tl.min(key, axis=0) % BLOCK_COLS
            scans += 1
            status = tl.where(lowest == float("inf"), 1, tl.where(scans > max_scans, 2, status))
            min_val = lowest
            scanned = scanned | (cols == col)
            owner = tl.load(row4col_base + col)
            reach = tl.where(rows == owner, lowest, reach)
            sink = tl.where(owner < 0, col, -1)
            row = tl.where(owner < 0, row, owner)
        if status == 0:
            # dual update (scipy's), then the augmentation along the path back to the start row
            u = tl.load(u_base + rows, mask=row_ok, other=0.0)
            u = tl.where(in_tree, u + tl.where(rows == start, min_val, min_val - reach), u)
            tl.store(u_base + rows, u, mask=row_ok)
            v = tl.where(scanned, v - (min_val - shortest), v)
            col_free = col_free & (cols != sink)
            col = sink
            going = (sink >= 0).to(tl.int32)
            while going > 0:
                row = tl.sum(tl.where(cols == col, path, 0), axis=0)
                tl.store(row4col_base + col, row)
                prev = tl.load(col4row_base + row)
                tl.store(col4row_base + row, col)
                going = (row != start).to(tl.int32)
                col = prev
            tl.debug_barrier()  # the stores above are read by every thread from the next scan on
            free = free & (rows != start)
    tl.store(v_ptr + prob * n_cols + cols, v, mask=col_ok)
    tl.store(status_ptr + prob, status)
    tl.store(scans_ptr + prob, scans)
