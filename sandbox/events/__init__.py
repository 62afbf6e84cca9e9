"""EventBridge: scheduled rules fired on sandbox time (moto stores them and never fires them)."""
