"""Operations on VMs: background tasks with retries, verified actions, who acts."""
