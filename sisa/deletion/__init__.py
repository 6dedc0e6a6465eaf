"""The deletion lifecycle: accepting a request, the compliance state that serves
rolled-back checkpoints, planning and running a batch, its cost, and its receipts."""
