// islrun's own test script: lines that do not parse. --check reports each one with its line
// and column and goes on to the next.
Event Inq : 1
    InfoMessage "before"
    Frobnicate 1, 2
    var ok : N3 = 1
    If ok = 1 Then
        Wibble
    EndIf
    x = = 2
EndEvent

Event Inq : 2
    InfoMessage "after"
EndEvent
