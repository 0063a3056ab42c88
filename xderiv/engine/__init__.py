"""How a call runs: argument checks, the plan, costs, chunks and the recursions of chains."""
