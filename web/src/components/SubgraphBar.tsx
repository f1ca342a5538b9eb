// While a subgraph is open for editing: where the canvas is (workflow › subgraph › ...) and the
// way back to the workflow around it.
import { useSyncExternalStore } from "react";
import { closeSubgraph, openPath, subscribePath } from "../subgraphs";

export function SubgraphBar({ onBack }: { onBack: () => void }) {
  const path = useSyncExternalStore(subscribePath, openPath);
  if (!path.length) return null;
  return (
    <div className="nf-subgraph-bar" data-testid="subgraph-bar">
      <button
        className="nf-small-button"
        data-testid="subgraph-back"
        title="Back to the workflow around this subgraph (its changes are kept)"
        onClick={() => {
          closeSubgraph();
          onBack();
        }}
      >
        ← Back
      </button>
      <span data-testid="subgraph-path">{["Workflow", ...path].join(" › ")}</span>
    </div>
  );
}
