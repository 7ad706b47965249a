"""route-by-currency: the component's entry point (the `plugin` world of wit/plugin.wit).

Passes events whose currency is in the setting `currencies` (adding the extension
("currency", "<CUR>")) and drops the others with the reason "currency XYZ not routed here".
A missing `currencies` setting fails every event fatally.
"""

import wit_world
from componentize_py_types import Err
from wit_world.imports import host, types

import routing


class WitWorld(wit_world.WitWorld):
    def handle(self, event: types.Event) -> types.Verdict:
        try:
            currencies = routing.parse_currencies(host.setting("currencies"))
        except routing.SettingError as e:
            raise Err(types.Failure_Fatal(str(e)))
        decision = routing.decide(currencies, event.data)
        if decision.drop_reason is not None:
            host.log(host.Level.DEBUG, f"{event.id}: {decision.drop_reason}")
            return types.Verdict_Drop(decision.drop_reason)
        event.extensions = [(k, v) for (k, v) in event.extensions if k != "currency"]
        event.extensions.append(("currency", decision.currency))
        return types.Verdict_Pass(event)
