// islrun's own test script: an ISL window with an input field, the ISL touchscreen read with
// InputKey, a confirmation, and the workstation's touchscreen.
Event Inq : 1
    var name : A20
    var key : Key
    var data : A10
    Touchscreen @ALPHASCREEN
    Window 3, 30, "Customer"
        Display 1, 1, "Name:"
        DisplayInput 1, 8, name{20}, "Customer name"
    WindowEdit
    WindowClose
    ClearIslTs
        SetIslTsKeyX 1, 1, 2, 5, 7, @KEY_ENTER, 10059, "L", 4, "Yes"
        SetIslTsKeyX 1, 6, 2, 5, 7, @KEY_CLEAR, 10058, "L", 2, "No"
        SetIslTsKeyX 3, 1, 2, 5, 7, Key(1, 327681), 0, "L", 3, "Begin"
    DisplayIslTs
    InputKey key, data, "Save the name?"
    If key = @KEY_ENTER
        InfoMessage "Saved", name
    ElseIf key = Key(1, 327681)
        InfoMessage "Begin check for", name
    Else
        InfoMessage "Not saved"
    EndIf
    WaitForConfirm "Print it?"
    InfoMessage "Confirmed"
EndEvent
