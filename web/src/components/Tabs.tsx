// The workflow tabs above the canvas: click to switch, × to close, + for a new one,
// double-click to rename.
import { useSyncExternalStore } from "react";
import { closeTab, newTab, renameTab, subscribeTabs, switchTab, tabsSnapshot } from "../tabs";

export function Tabs() {
  const { tabs, active } = useSyncExternalStore(subscribeTabs, tabsSnapshot);
  return (
    <div className="nf-tabs" data-testid="workflow-tabs">
      {tabs.map((tab) => (
        <div
          key={tab.id}
          className={`nf-tab${tab.id === active ? " nf-tab-active" : ""}`}
          data-testid="workflow-tab"
          data-tab-id={tab.id}
          data-active={tab.id === active ? "true" : "false"}
          onClick={() => switchTab(tab.id)}
          onDoubleClick={() => {
            const name = window.prompt("Tab name", tab.name);
            if (name !== null) renameTab(tab.id, name);
          }}
          title={tab.name}
        >
          <span className="nf-tab-name">{tab.name}</span>
          <span
            className="nf-tab-close"
            data-testid="tab-close"
            title="Close this tab"
            onClick={(e) => {
              e.stopPropagation();
              void closeTab(tab.id);
            }}
          >
            ×
          </span>
        </div>
      ))}
      <button className="nf-tab-new" data-testid="new-tab" title="A new workflow in its own tab" onClick={() => newTab()}>
        +
      </button>
    </div>
  );
}
