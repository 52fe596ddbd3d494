"""Sample-level DP as a client's local trainer: one DP-SGD round per train message.

The accountant history lives in the client's directory, keyed by round, so that a resumed run
spends exactly what an uninterrupted one would; the budget is checked before any step, by the accountant the
plan was calibrated with. Each reply carries ``epsilon`` (that accountant's), ``epsilon_rdp`` and ``epsilon_pld``.
"""

from __future__ import annotations

from fedicd.federated.local import LocalResult, LocalTrainer

__all__ = ["DPSampleTrainer"]


class DPSampleTrainer(LocalTrainer):
    """DP-SGD on the client's rows with the client's :class:`~fedicd.run_plan.DPPlan`."""

    def train(self, model, data, local, msg) -> LocalResult:
        from fedicd.privacy.accounting import load_history, save_history
        from fedicd.privacy.dp_local import check_budget, dp_local_train

        privacy = self.plan.privacy_config
        plan = self.plan.privacy.clients[self.pid]
        client_dir = self.run_dir / "clients" / str(self.pid)
        history = load_history(client_dir, local.server_round, count_all=privacy.secure_rng)
        check_budget(plan, history, plan.steps_per_epoch * local.local_epochs, partition_id=self.pid,
                     server_round=local.server_round)
        res = dp_local_train(model, data.x_train, data.y_train, self.plan.train, local, privacy, plan, history,
                             scaffold=False, clipping=self.plan.privacy.clipping or None)
        save_history(client_dir, local.server_round, res.history, count_all=privacy.secure_rng)
        return LocalResult(res.loss, {"epsilon": res.epsilon, "epsilon_rdp": res.epsilon_rdp,
                                      "epsilon_pld": res.epsilon_pld, "dp_steps": res.steps,
                                      "dp_empty_batches": res.empty_batches,
                                      "dp_clipped_fraction": res.clipped_fraction})
